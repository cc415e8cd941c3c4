#pragma once

/// Everything in triad: `#include <triad/triad.hpp>`.
#include <triad/cpu.hpp>
#include <triad/errors.hpp>
#include <triad/future.hpp>
#include <triad/serialize.hpp>
#include <triad/thread_pool.hpp>
#include <triad/version.hpp>
