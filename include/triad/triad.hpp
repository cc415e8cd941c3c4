#pragma once

/// Everything in triad: `#include <triad/triad.hpp>`.
#include <triad/async.hpp>
#include <triad/blocking_queue.hpp>
#include <triad/combinators.hpp>
#include <triad/cpu.hpp>
#include <triad/errors.hpp>
#include <triad/fork_server.hpp>
#include <triad/future.hpp>
#include <triad/generator.hpp>
#include <triad/pool_options.hpp>
#include <triad/process.hpp>
#include <triad/process_pool.hpp>
#include <triad/process_queue.hpp>
#include <triad/retry.hpp>
#include <triad/serialize.hpp>
#include <triad/sync.hpp>
#include <triad/synchronized.hpp>
#include <triad/task.hpp>
#include <triad/thread_pool.hpp>
#include <triad/trace.hpp>
#include <triad/use_task.hpp>
#include <triad/version.hpp>
