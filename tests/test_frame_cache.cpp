// The event loop's cache of coroutine frames, on even under AddressSanitizer (which otherwise
// turns it off), so that a use of the cache after its thread destroyed it is caught there.
#define TRIAD_FRAME_CACHE 1
#include <triad/task.hpp>

#include <catch2/catch.hpp>

#include <optional>
#include <thread>

namespace {
triad::task<int> answer() {
    co_return 42;
}

// Destroyed at thread exit after the frame cache, which was first used after this was built.
struct frame_holder {
    std::optional<triad::task<int>> task;
};
thread_local frame_holder held;
} // namespace

TEST_CASE("a frame freed after its thread's frame cache is gone goes back to the heap",
          "[frame_cache]") {
    // As a static event_loop's tasks are, freed after main's thread_locals at exit: the free
    // once went into the destroyed cache (a use after free under AddressSanitizer, an invalid
    // free under valgrind).
    std::thread([] {
        held.task.reset();    // built first
        triad::run(answer()); // the first frame: the cache is built now
        held.task.emplace(answer());
    }).join();
    SUCCEED("the thread ended without touching its destroyed cache");
}

TEST_CASE("frames are reused on one thread and freed by another", "[frame_cache]") {
    for (int round = 0; round < 1000; ++round)
        CHECK(triad::run(answer()) == 42);
    std::optional<triad::task<int>> moved;
    std::thread([&] { moved.emplace(answer()); }).join();
    moved.reset(); // allocated on a thread now gone, freed here
    SUCCEED();
}
