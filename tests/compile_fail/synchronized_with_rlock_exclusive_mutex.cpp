// A shared-lock read of a synchronized value whose mutex has no lock_shared.
#include <triad/synchronized.hpp>

#include <mutex>

int main() {
    triad::synchronized<int, std::mutex> counter{0};
    return counter.with_rlock([](const int& value) { return value; });
}
