#pragma once

/// Everything in triad: `#include <triad/triad.hpp>`.
#include <triad/cpu.hpp>
#include <triad/errors.hpp>
#include <triad/future.hpp>
#include <triad/pool_options.hpp>
#include <triad/process.hpp>
#include <triad/process_pool.hpp>
#include <triad/process_queue.hpp>
#include <triad/serialize.hpp>
#include <triad/thread_pool.hpp>
#include <triad/version.hpp>
