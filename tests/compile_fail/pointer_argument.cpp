// Must not compile: a pointer means nothing in another process.
#include <triad/process_pool.hpp>
int length(const char* text) { return text[0]; }
int main() {
    triad::process_pool pool(1);
    return pool.submit(length, "hello").get();
}
