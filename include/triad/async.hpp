#pragma once

/// triad's coroutine executor, everything asyncio users reach for, on Boost.Asio:
/// `task`, `run`, `event_loop`, `spawn`, `sleep`, `co_await` on pool futures, `to_thread`
/// (<triad/task.hpp>); `gather`, `gather_settled`, `when_any`, `timeout`, `shield`,
/// `as_completed`, `task_group::scope`
/// (<triad/combinators.hpp>); `semaphore`, `async_mutex`, `event`, `channel` (<triad/sync.hpp>);
/// `generator` (<triad/generator.hpp>); `retry` (<triad/retry.hpp>); `use_task` for any Asio
/// operation (<triad/use_task.hpp>).
#include <triad/combinators.hpp>
#include <triad/generator.hpp>
#include <triad/retry.hpp>
#include <triad/sync.hpp>
#include <triad/task.hpp>
#include <triad/use_task.hpp>
