// A shared lock on a synchronized value whose mutex has no lock_shared.
#include <triad/synchronized.hpp>

#include <mutex>

int main() {
    triad::synchronized<int, std::mutex> counter{0};
    return *counter.rlock();
}
