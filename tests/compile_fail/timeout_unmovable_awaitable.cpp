// An rvalue awaitable is moved into the task timeout returns: it must be movable.
#include <chrono>
#include <coroutine>
#include <triad/combinators.hpp>
struct pinned {
    pinned() = default;
    pinned(pinned&&) = delete;
    bool await_ready() const noexcept { return true; }
    void await_suspend(std::coroutine_handle<>) const noexcept {}
    int await_resume() const noexcept { return 1; }
};
triad::task<void> wait_for_pinned() {
    (void)co_await triad::timeout(std::chrono::seconds(1), pinned());
}
int main() {}
