// from_bytes refuses an enum without a fixed underlying type.
#include <triad/serialize.hpp>
#include <vector>
enum color { red, green };
int main() {
    std::vector<char> bytes(4);
    return triad::from_bytes<color>(bytes) == red ? 0 : 1;
}
