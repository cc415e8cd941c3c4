// triad::process refuses a function that cannot take the arguments given.
#include <string>
#include <triad/process.hpp>
int twice(int x) {
    return 2 * x;
}
int main() {
    triad::process child(twice, std::string("two"));
    return child.join();
}
