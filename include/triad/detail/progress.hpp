#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <string>

#include <unistd.h>

#include <triad/pool_options.hpp>

namespace triad::detail {

// A tqdm-style progress line for map/imap: workers add what they finished; the waiting thread
// draws, at most ten times a second.
class progress_meter {
public:
    progress_meter(progress_bar mode, std::size_t total)
        : m_total(total), m_start(std::chrono::steady_clock::now()),
          m_enabled(mode == progress_bar::always ||
                    (mode == progress_bar::terminal && ::isatty(STDERR_FILENO) != 0)) {}
    progress_meter(const progress_meter&) = delete;
    progress_meter& operator=(const progress_meter&) = delete;
    ~progress_meter() { finish(false); }

    bool enabled() const noexcept { return m_enabled; }
    std::atomic<std::size_t>* counter() noexcept { return m_enabled ? &m_done : nullptr; }
    void add(std::size_t n) noexcept {
        if (m_enabled)
            m_done.fetch_add(n, std::memory_order_relaxed);
    }

    // Items under way that have not been added yet (a process-pool chunk half done): shown,
    // not counted.
    void set_partial(std::size_t n) noexcept { m_partial.store(n, std::memory_order_relaxed); }

    // Everything is done: the final line, at 100%, and the end of the line, drawn now (before
    // the call that owns the meter returns, so the program's next output starts on a line of
    // its own). Later calls do nothing.
    void finish(bool complete = true) noexcept {
        if (!m_enabled || m_finished)
            return;
        m_finished = true;
        if (complete) {
            m_done.store(m_total, std::memory_order_relaxed);
            m_partial.store(0, std::memory_order_relaxed);
        }
        if (!m_drawn && !complete)
            return;
        try {
            draw();
        } catch (...) {
        }
        write_text("\n");
    }

    // Draws if a tenth of a second passed since the last line.
    void tick() {
        if (!m_enabled || m_finished)
            return;
        const auto now = std::chrono::steady_clock::now();
        if (m_drawn && now - m_last < std::chrono::milliseconds(100))
            return;
        m_last = now;
        draw();
    }

    // The line as it would be drawn now (tests read it).
    std::string line() const {
        const std::size_t done = std::min(m_done.load(std::memory_order_relaxed) +
                                              m_partial.load(std::memory_order_relaxed),
                                          m_total);
        const double elapsed =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - m_start).count();
        const double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0.0;
        const double fraction =
            m_total == 0 ? 1.0 : static_cast<double>(done) / static_cast<double>(m_total);
        constexpr int width = 24;
        const int filled = static_cast<int>(fraction * width);
        std::string bar(static_cast<std::size_t>(filled), '#');
        bar.resize(width, ' ');
        const double eta = rate > 0 ? static_cast<double>(m_total - done) / rate : 0.0;
        char text[160];
        std::snprintf(text, sizeof text, "%3d%%|%s| %zu/%zu [%s<%s, %.1f it/s]",
                      static_cast<int>(fraction * 100), bar.c_str(), done, m_total,
                      clock_text(elapsed).c_str(), clock_text(eta).c_str(), rate);
        return text;
    }

private:
    static std::string clock_text(double seconds) {
        const long s = static_cast<long>(seconds);
        char text[32];
        if (s >= 3600)
            std::snprintf(text, sizeof text, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
        else
            std::snprintf(text, sizeof text, "%02ld:%02ld", s / 60, s % 60);
        return text;
    }

    void draw() {
        m_drawn = true;
        std::string text = "\r";
        text += line(); // append, not "\r" + line(): GCC 12 bug 105329 warns on that at -O3
        write_text(text);
    }

    static void write_text(const std::string& text) noexcept {
        // One write per line, so lines from several processes never interleave mid-line.
        [[maybe_unused]] const ssize_t n = ::write(STDERR_FILENO, text.data(), text.size());
    }

    std::atomic<std::size_t> m_done{0};
    std::atomic<std::size_t> m_partial{0};
    std::size_t m_total;
    std::chrono::steady_clock::time_point m_start;
    std::chrono::steady_clock::time_point m_last{};
    bool m_enabled;
    bool m_drawn = false;
    bool m_finished = false;
};

} // namespace triad::detail
