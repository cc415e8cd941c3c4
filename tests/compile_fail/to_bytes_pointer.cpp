// to_bytes refuses a pointer.
#include <triad/serialize.hpp>
int main() {
    int value = 1;
    const int* p = &value;
    return static_cast<int>(triad::to_bytes(p).size());
}
