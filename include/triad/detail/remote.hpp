#pragma once

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <unistd.h>

#include <triad/detail/exception_info.hpp>
#include <triad/detail/text.hpp>
#include <triad/errors.hpp>
#include <triad/serialize.hpp>

namespace triad::detail {

// --- frames ------------------------------------------------------------------------------------
// Every message between the parent and a worker is a frame: a 16-byte header (payload size,
// kind, task id) and the payload.

enum class frame_kind : std::uint32_t {
    task = 1,        // parent -> worker: invoker index, function address, encoded arguments
    result = 2,      // worker -> parent: the encoded return value
    failure = 3,     // worker -> parent: the exception's type name and what()
    ready = 4,       // worker -> parent: the initializer ran; tasks may come
    init_failed = 5, // worker -> parent: the initializer threw (type, what); the worker exits
    cancelled = 6,   // worker -> parent: the pool is cancelling; the task was not run
    retiring = 7,    // worker -> parent: max_tasks_per_child reached; the worker exits
    stop = 8,        // parent -> worker: the pool is stopping; exit now
    too_large = 9,   // worker -> parent: the result is over max_message_size (why, as text)
};

struct frame_header {
    std::uint64_t payload_size;
    std::uint32_t kind;
    std::uint32_t sequence; // of a task frame: its number on the worker it was sent to
    std::uint64_t task_id;
};
static_assert(sizeof(frame_header) == 24);

inline void begin_frame(std::vector<char>& out, frame_kind kind, std::uint64_t task_id) {
    frame_header header{0, static_cast<std::uint32_t>(kind), 0, task_id};
    const auto* p = reinterpret_cast<const char*>(&header);
    out.insert(out.end(), p, p + sizeof header);
}

// Patches the payload size of the frame that starts at `frame_start`.
inline void end_frame(std::vector<char>& out, std::size_t frame_start) {
    const std::uint64_t size = out.size() - frame_start - sizeof(frame_header);
    std::memcpy(out.data() + frame_start, &size, sizeof size);
}

// A task frame: the invoker that decodes and runs it, the function (an address, or for the MPI
// pool an offset into the executable; 0 for a stateless function object), the timeout
// (frame_timeout_ns) and the encoded arguments.
template <class EncodeArguments>
void build_task_frame(std::vector<char>& frame, std::uint64_t task_id, std::uint32_t invoker,
                      std::uint64_t function, std::int64_t timeout_ns,
                      EncodeArguments&& encode_arguments) {
    begin_frame(frame, frame_kind::task, task_id);
    byte_writer writer(frame);
    writer.write_scalar<std::uint32_t>(invoker);
    writer.write_scalar<std::uint64_t>(function);
    writer.write_scalar<std::int64_t>(timeout_ns);
    encode_arguments(writer);
    end_frame(frame, 0);
}

// Bytes received and not parsed yet. Unlike std::vector<char> it grows without zero-filling,
// so reading a large message in pieces costs one copy, not a memset per read.
class receive_buffer {
public:
    char* data() noexcept { return m_data.get(); }
    const char* data() const noexcept { return m_data.get(); }
    std::size_t size() const noexcept { return m_size; }
    std::size_t room() const noexcept { return m_capacity - m_size; }
    char* end() noexcept { return m_data.get() + m_size; }

    void ensure_room(std::size_t bytes) {
        if (room() >= bytes)
            return;
        const std::size_t capacity = std::max(m_capacity * 2, m_size + bytes);
        auto bigger = std::make_unique_for_overwrite<char[]>(capacity); // not zeroed
        if (m_size != 0)
            std::memcpy(bigger.get(), m_data.get(), m_size);
        m_data = std::move(bigger);
        m_capacity = capacity;
    }
    void grow(std::size_t bytes) noexcept { m_size += bytes; }
    void consume(std::size_t bytes) noexcept {
        if (bytes != 0 && bytes < m_size)
            std::memmove(m_data.get(), m_data.get() + bytes, m_size - bytes);
        m_size -= bytes;
        // Give back a large buffer once a large message is gone.
        if (m_size == 0 && m_capacity > 4 * 1024 * 1024) {
            m_data.reset();
            m_capacity = 0;
        }
    }

private:
    std::unique_ptr<char[]> m_data;
    std::size_t m_size = 0;
    std::size_t m_capacity = 0;
};

// Splits complete frames off the front of a receive buffer; validates each header.
class frame_parser {
public:
    explicit frame_parser(std::uint64_t max_payload,
                          std::size_t max_nesting = default_max_nesting) noexcept
        : m_max_payload(max_payload), m_max_nesting(max_nesting) {}

    // Received bytes are appended here. It grows by what the next frame needs, 16 MiB at a
    // time at most, so a header's claim alone never makes it allocate.
    receive_buffer& buffer() noexcept { return m_buffer; }

    // Calls on_frame(header, reader over the payload, whether another complete frame follows)
    // for each complete frame in the buffer, then drops them from it.
    template <class OnFrame>
    void parse(OnFrame&& on_frame) {
        // Frames are delivered (and consumed) one at a time, so a bad frame behind good ones
        // throws only once the good ones were handled.
        std::size_t offset = 0;
        try {
            for (std::size_t total = complete_frame_at(offset); total != 0;
                 total = complete_frame_at(offset)) {
                frame_header header;
                std::memcpy(&header, m_buffer.data() + offset, sizeof header);
                byte_reader payload(m_buffer.data() + offset + sizeof header,
                                    static_cast<std::size_t>(header.payload_size), m_max_nesting);
                offset += total;
                on_frame(header, payload, m_buffer.size() - offset >= sizeof(frame_header));
            }
        } catch (...) {
            m_buffer.consume(offset);
            throw;
        }
        m_buffer.consume(offset);
    }

    // How many more bytes the frame at the front still needs (to size the next read).
    std::size_t missing() const noexcept {
        if (m_buffer.size() < sizeof(frame_header))
            return sizeof(frame_header) - m_buffer.size();
        frame_header header;
        std::memcpy(&header, m_buffer.data(), sizeof header);
        const std::uint64_t total = sizeof header + header.payload_size;
        return total > m_buffer.size() ? static_cast<std::size_t>(total - m_buffer.size()) : 0;
    }

private:
    // The size of the complete, valid frame at `offset`, or 0 if it is not all there yet.
    std::size_t complete_frame_at(std::size_t offset) const {
        if (m_buffer.size() - offset < sizeof(frame_header))
            return 0;
        frame_header header;
        std::memcpy(&header, m_buffer.data() + offset, sizeof header);
        if (header.payload_size > m_max_payload)
            throw protocol_error(concat("triad: a message of ", header.payload_size,
                                        " bytes exceeds the limit of ", m_max_payload,
                                        " (process_pool_options::max_message_size)"));
        if (header.kind < 1 || header.kind > 9)
            throw protocol_error(
                concat("triad: corrupt message: unknown frame kind ", header.kind));
        const std::size_t total = sizeof header + static_cast<std::size_t>(header.payload_size);
        return m_buffer.size() - offset < total ? 0 : total;
    }

    std::uint64_t m_max_payload;
    std::size_t m_max_nesting;
    receive_buffer m_buffer;
};

// Reads what is available from `fd` (blocking or not) into the parser's buffer, making room
// for what the next frame still needs, within [64 KiB, 16 MiB] per call. Returns the bytes
// read, 0 at end of file, -1 with errno set (EAGAIN included).
inline long read_into(int fd, frame_parser& parser) {
    receive_buffer& buffer = parser.buffer();
    buffer.ensure_room(std::clamp<std::size_t>(parser.missing(), 64 * 1024, 16 * 1024 * 1024));
    long n;
    do {
        n = ::read(fd, buffer.end(), buffer.room());
    } while (n < 0 && errno == EINTR);
    if (n > 0)
        buffer.grow(static_cast<std::size_t>(n));
    return n;
}

// --- what a worker can be asked to run ---------------------------------------------------------

// An invoker decodes the arguments of one (function, argument types) pair, runs it and appends
// the encoded result; it throws what the function throws.
using invoker_fn = void (*)(std::uintptr_t function, byte_reader& arguments,
                            std::vector<char>& result);

// Every invoker is registered during static initialisation, so the table is complete before
// main() and identical in every worker (they are forks). A task names its invoker by index: a
// corrupt index is an error, never a jump to an arbitrary address.
class invoker_registry {
public:
    static std::uint32_t add(invoker_fn fn) {
        auto& t = table();
        t.push_back(fn);
        return static_cast<std::uint32_t>(t.size() - 1);
    }
    static std::size_t count() { return table().size(); }
    static invoker_fn find(std::uint32_t index) {
        const auto& t = table();
        if (index >= t.size())
            throw protocol_error(concat("triad: corrupt message: no invoker number ", index,
                                        " (code loaded after the pool started cannot run in it)"));
        return t[index];
    }

private:
    static std::vector<invoker_fn>& table() {
        static std::vector<invoker_fn> invokers;
        return invokers;
    }
};

// The executable mappings of this process: a function address received from the parent must
// point into one of them before it is called.
class code_ranges {
public:
    static code_ranges& instance() {
        static code_ranges ranges;
        return ranges;
    }
    void load() {
        m_ranges.clear();
        std::FILE* maps = std::fopen("/proc/self/maps", "re");
        if (maps == nullptr)
            return;
        char line[512];
        while (std::fgets(line, sizeof line, maps) != nullptr) {
            unsigned long begin = 0;
            unsigned long end = 0;
            char perms[5] = {};
            if (std::sscanf(line, "%lx-%lx %4s", &begin, &end, perms) == 3 && perms[2] == 'x')
                m_ranges.emplace_back(begin, end);
        }
        std::fclose(maps);
        std::sort(m_ranges.begin(), m_ranges.end());
    }
    bool contains(std::uintptr_t address) const noexcept {
        if (m_ranges.empty())
            return true; // /proc unavailable: nothing to check against
        auto it = std::upper_bound(m_ranges.begin(), m_ranges.end(),
                                   std::pair<std::uintptr_t, std::uintptr_t>(address, UINTPTR_MAX));
        return it != m_ranges.begin() && address < std::prev(it)->second;
    }

private:
    std::vector<std::pair<std::uintptr_t, std::uintptr_t>> m_ranges;
};

// --- callables that can cross fork() -----------------------------------------------------------

template <class F>
inline constexpr bool is_function_pointer =
    std::is_pointer_v<F>&& std::is_function_v<std::remove_pointer_t<F>>;

// A callable a worker can run without being sent its state: a function pointer (same code at
// the same address after fork) or a stateless, default-constructible function object.
template <class F>
inline constexpr bool is_sendable_callable = is_function_pointer<F> ||
                                             (std::is_class_v<F> && std::is_empty_v<F> &&
                                              std::is_default_constructible_v<F>);

// Refuses a callable a worker cannot run, naming its type; called, like refuse_unserializable,
// only where the check failed, by a caller that then does nothing else with it.
template <class F>
void refuse_unsendable_callable() {
    static_assert(is_sendable_callable<F>,
                  "triad::process_pool: this callable cannot be sent to a worker process. Send a "
                  "function (or a pointer to one), a lambda with no captures, or a stateless "
                  "function object; pass the data it needs as arguments instead of capturing it. "
                  "(std::function, capturing lambdas and functors with members hold state that "
                  "only exists in this process.)");
}

// Refuses the first of the types that cannot be sent (one error, however many there are).
template <class T, class... Rest>
void refuse_first_unserializable() {
    if constexpr (!serializable<T>)
        refuse_unserializable<std::remove_cv_t<T>>();
    else
        refuse_first_unserializable<Rest...>();
}

// Stands for the result of a call refused at compile time (its callable cannot take the
// arguments, or a map's returns void), so that the caller's own use of the result (`.get()`,
// a range-for, `return`) adds no errors after the one that explains the refusal. It exists only
// in programs that do not compile, so its conversion is never defined.
struct refused_result {
    template <class T>
    operator T() const; // NOLINT: converts to whatever the caller expected
};

template <class F, class... Args>
struct submit_result {
    using type = refused_result;
};
template <class F, class... Args>
requires std::is_invocable_v<F&, Args...>
struct submit_result<F, Args...> {
    using type = std::remove_cvref_t<std::invoke_result_t<F&, Args...>>;
};

// What `process_pool::submit(fn, args...)` returns a future of: `refused_result` when `fn`
// cannot take the arguments, so that the signature stays valid and the body can explain.
template <class Fn, class... Args>
using submit_result_t = typename submit_result<std::decay_t<Fn>, std::decay_t<Args>...>::type;

template <class F, class... Args>
constexpr bool submit_is_valid() {
    if constexpr (!is_sendable_callable<F> || !(serializable<Args> && ...) ||
                  !std::is_invocable_v<F&, Args...>) {
        return false;
    } else {
        using R = std::remove_cvref_t<std::invoke_result_t<F&, Args...>>;
        return std::is_void_v<R> || serializable<R>;
    }
}

// Explains why submit_is_valid is false: the first check that fails, and only it, so one
// misuse is one error, and later checks (the result type) are not asked about a call that
// cannot be made.
template <class F, class... Args>
void refuse_submit() {
    if constexpr (!is_sendable_callable<F>) {
        refuse_unsendable_callable<F>();
    } else if constexpr (!(serializable<Args> && ...)) {
        refuse_first_unserializable<Args...>();
    } else if constexpr (!std::is_invocable_v<F&, Args...>) {
        static_assert(std::is_invocable_v<F&, Args...>,
                      "triad::process_pool::submit: the callable cannot be called with these "
                      "arguments (they are decoded in the worker and passed as rvalues)");
    } else {
        refuse_unserializable<std::remove_cvref_t<std::invoke_result_t<F&, Args...>>>();
    }
}

// The result of one map item: `f(item)`, or with `Spread` (starmap) `f(get<I>(item)...)` as
// std::apply would call it. Computed here rather than through std::apply, whose deduced return
// type turns an item that is not a tuple into a hard error inside the standard library.
template <class F, class Item, bool Spread>
struct map_call {
    static constexpr bool invocable = false;
};
template <class F, class Item>
requires std::is_invocable_v<F&, Item>
struct map_call<F, Item, false> {
    static constexpr bool invocable = true;
    using result = std::remove_cvref_t<std::invoke_result_t<F&, Item>>;
};
template <class F, class Tuple, class Indices>
struct spread_call {
    static constexpr bool invocable = false;
};
template <class F, class Tuple, std::size_t... I>
requires std::is_invocable_v<F&, std::tuple_element_t<I, Tuple>...>
struct spread_call<F, Tuple, std::index_sequence<I...>> {
    static constexpr bool invocable = true;
    using result = std::remove_cvref_t<std::invoke_result_t<F&, std::tuple_element_t<I, Tuple>...>>;
};
template <class F, class Item>
requires requires {
    std::tuple_size<Item>::value;
}
struct map_call<F, Item, true>
    : spread_call<F, Item, std::make_index_sequence<std::tuple_size_v<Item>>> {};

// The element type of what map and imap return: the callable's result, or `refused_result`
// where there is none to name.
template <class F, class Item, bool Spread>
constexpr auto map_result_type() {
    if constexpr (!map_call<F, Item, Spread>::invocable)
        return std::type_identity<refused_result>{};
    else if constexpr (std::is_void_v<typename map_call<F, Item, Spread>::result>)
        return std::type_identity<refused_result>{};
    else
        return std::type_identity<typename map_call<F, Item, Spread>::result>{};
}
template <class F, class Item, bool Spread>
using map_result_t = typename decltype(map_result_type<F, Item, Spread>())::type;

template <class F, class Item, bool Spread>
constexpr bool map_is_valid() {
    if constexpr (!is_sendable_callable<F> || !serializable<Item> ||
                  !map_call<F, Item, Spread>::invocable)
        return false;
    else
        return serializable<typename map_call<F, Item, Spread>::result>; // false for void too
}

// As refuse_submit, for map, starmap and imap.
template <class F, class Item, bool Spread>
void refuse_map() {
    using call = map_call<F, Item, Spread>;
    if constexpr (!is_sendable_callable<F>) {
        refuse_unsendable_callable<F>();
    } else if constexpr (!serializable<Item>) {
        refuse_unserializable<Item>();
    } else if constexpr (!call::invocable && Spread) {
        static_assert(call::invocable, "triad::process_pool::starmap: each item must be a tuple "
                                       "(or pair) of the callable's arguments");
    } else if constexpr (!call::invocable) {
        static_assert(call::invocable,
                      "triad::process_pool::map: the callable cannot be called with an item");
    } else if constexpr (std::is_void_v<typename call::result>) {
        static_assert(!std::is_void_v<typename call::result>,
                      "triad::process_pool::map: the callable returns void; return a value (or "
                      "use submit per item)");
    } else {
        refuse_unserializable<typename call::result>();
    }
}

template <class F>
std::uintptr_t callable_address(const F& f) noexcept {
    if constexpr (is_function_pointer<F>)
        return reinterpret_cast<std::uintptr_t>(f);
    else
        return 0;
}

template <class F>
F callable_from(std::uintptr_t address) {
    if constexpr (is_function_pointer<F>) {
        if (!code_ranges::instance().contains(address))
            throw protocol_error(concat("triad: corrupt message: function address ", address,
                                        " is not code in this process"));
        return reinterpret_cast<F>(address);
    } else {
        return F{};
    }
}

// One (callable type, argument types) pair: run in a worker as a single task.
template <class F, class... Args>
struct remote_call {
    using result_type = std::invoke_result_t<F&, Args...>;

    static void invoke(std::uintptr_t function, byte_reader& in, std::vector<char>& out) {
        std::tuple<Args...> arguments;
        std::apply([&in](auto&... a) { (decode_value(in, a), ...); }, arguments);
        in.expect_end();
        F f = callable_from<F>(function);
        if constexpr (std::is_void_v<result_type>) {
            std::apply(f, std::move(arguments));
        } else {
            const result_type value = std::apply(f, std::move(arguments));
            encode_to(out, value);
        }
    }

    static inline const std::uint32_t id = invoker_registry::add(&invoke);
};

// A failure of one item of a map chunk, carried back instead of aborting the chunk.
struct remote_failure {
    std::string type_name;
    std::string message;
    template <class Archive>
    void serialize(Archive& ar) {
        ar(type_name, message);
    }
};

inline remote_failure capture_failure(const std::exception_ptr& error) {
    try {
        std::rethrow_exception(error);
    } catch (const std::exception& e) {
        return {demangle(typeid(e).name()), e.what()};
    } catch (...) {
        const std::type_info* type = abi::__cxa_current_exception_type();
        return {type != nullptr ? demangle(type->name()) : std::string("unknown"),
                "an exception not derived from std::exception"};
    }
}

// What a map chunk sends back: one value per item (a default one where the item failed) and
// the failures by position. Values of arithmetic types travel as one block.
template <class R>
using chunk_result =
    std::pair<std::vector<R>, std::vector<std::pair<std::uint64_t, remote_failure>>>;

// Where a map chunk reports its items in a worker (set by the worker; unset in any other
// process): the count of items finished, stored after each (this process is its only writer, so
// a plain store, not a locked increment: it costs about nothing per item), and, only while the
// chunk has a per-item timeout, hooks around each item.
struct chunk_items {
    std::atomic<std::uint64_t>* done = nullptr;
    void (*begin_item)(void*) noexcept = nullptr;
    void (*end_item)(void*) noexcept = nullptr;
    void* context = nullptr;
    static chunk_items& current() noexcept {
        static chunk_items hooks;
        return hooks;
    }
};

// A chunk of map items: f applied to each, every item's result or failure sent back. With
// `Spread`, each item is a tuple whose elements become the arguments (starmap).
template <class F, class Item, bool Spread>
struct remote_chunk {
    static decltype(auto) call(F& f, Item& item) {
        if constexpr (Spread)
            return std::apply(f, std::move(item));
        else
            return f(std::move(item));
    }
    using result_type = typename map_call<F, Item, Spread>::result;

    static void invoke(std::uintptr_t function, byte_reader& in, std::vector<char>& out) {
        std::vector<Item> items;
        decode_value(in, items);
        in.expect_end();
        F f = callable_from<F>(function);
        chunk_result<result_type> result;
        result.first.reserve(items.size());
        chunk_items& progress = chunk_items::current();
        for (std::size_t i = 0; i < items.size(); ++i) {
            if (progress.begin_item != nullptr)
                progress.begin_item(progress.context);
            try {
                result.first.push_back(call(f, items[i]));
            } catch (...) {
                result.first.emplace_back();
                result.second.emplace_back(i, capture_failure(std::current_exception()));
            }
            if (progress.end_item != nullptr)
                progress.end_item(progress.context);
            if (progress.done != nullptr)
                progress.done->store(i + 1, std::memory_order_relaxed);
        }
        encode_to(out, result);
    }

    static inline const std::uint32_t id = invoker_registry::add(&invoke);
};

} // namespace triad::detail
