// submit(&T::member, obj) copies obj into the task and returns a reference into that copy, which
// dangles once the future is consumed: refused, with advice.
#include <triad/thread_pool.hpp>

#include <string>

struct person {
    std::string name;
};

int main() {
    triad::thread_pool pool(1);
    person someone{"Ada"};
    auto name = pool.submit(&person::name, someone);
    return static_cast<int>(name.get().size());
}
