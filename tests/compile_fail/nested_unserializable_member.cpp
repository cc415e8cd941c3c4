// A user type whose serialize() lists a field that cannot be sent is refused at that field.
#include <triad/process_pool.hpp>
struct record {
    int id = 0;
    const char* name = nullptr;
    template <class Archive>
    void serialize(Archive& ar) {
        ar(id, name);
    }
};
int id_of(record r) {
    return r.id;
}
int main() {
    triad::process_pool pool(1);
    return pool.submit(id_of, record{}).get();
}
