// A process_queue of string_view would send addresses, not text.
#include <string_view>
#include <triad/process_queue.hpp>
int main() {
    triad::process_queue<std::string_view> queue;
    queue.put("hello");
    return queue.get() ? 0 : 1;
}
