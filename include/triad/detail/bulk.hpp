#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#include <triad/detail/shared_state.hpp>
#include <triad/detail/task_queue.hpp>
#include <triad/detail/trace.hpp>
#include <triad/errors.hpp>

namespace triad::detail {

// One map/for_each/parallel_for call. It queues one runner task per worker (at most one per
// item); runners claim ranges of items from a shared counter until none are left, so a worker
// that is free early keeps taking work and nobody's items are stranded behind a long task.
// Without an explicit chunk size, claims are "guided": each takes a share of what remains,
// large at first (little overhead on tiny items), down to one item at the end (balance on
// uneven ones). The job is also the future<void> the caller waits on: the whole call costs two
// allocations, whatever the number of items.
class bulk_job final : public shared_state<void> {
public:
    using body_fn = void (*)(void* body, std::size_t begin, std::size_t end, bulk_job& job);

    bulk_job(std::size_t items, std::size_t workers, std::size_t fixed_chunk, body_fn run,
             void* body, std::atomic<std::size_t>* progress = nullptr)
        : shared_state<void>(2), m_items(items), m_workers(std::max<std::size_t>(1, workers)),
          m_fixed_chunk(std::min(fixed_chunk, items)), m_run(run), m_body(body),
          m_progress(progress) {
        const std::size_t claims =
            m_fixed_chunk == 0 ? items : (items + m_fixed_chunk - 1) / m_fixed_chunk;
        const std::size_t runners = std::min(m_workers, claims);
        m_runners.reserve(runners);
        for (std::size_t i = 0; i < runners; ++i)
            m_runners.emplace_back(this);
        // Queues take chains linked newest to oldest.
        for (std::size_t i = 1; i < m_runners.size(); ++i)
            m_runners[i].m_next = &m_runners[i - 1];
        m_remaining.store(m_runners.size(), std::memory_order_relaxed);
    }

    std::size_t runner_count() const noexcept { return m_runners.size(); }
    task_node* newest() noexcept { return &m_runners.back(); }
    task_node* oldest() noexcept { return &m_runners.front(); }

    // Keeps the exception of the lowest failing item, so the error map() rethrows does not
    // depend on scheduling.
    void record_error(std::size_t index, std::exception_ptr error) noexcept {
        std::lock_guard lock(m_error_mutex);
        if (index < m_error_index) {
            m_error_index = index;
            m_error = std::move(error);
        }
    }

private:
    struct runner final : task_node {
        explicit runner(bulk_job* job) noexcept : task_node(&bulk_job::execute_runner), m_job(job) {
            m_result = job; // the caller of map waits on the job
        }
        bulk_job* m_job;
    };

    static bool execute_runner(task_node* node, bool cancel) noexcept {
        bulk_job* job = static_cast<runner*>(node)->m_job;
        if (cancel) {
            // Items nobody has started are dropped.
            const std::size_t begin = job->m_next.exchange(job->m_items, std::memory_order_relaxed);
            if (begin < job->m_items)
                job->record_error(begin, std::make_exception_ptr(task_cancelled()));
        } else {
            for (;;) {
                const std::size_t size = job->claim_size();
                const std::size_t begin = job->m_next.fetch_add(size, std::memory_order_relaxed);
                if (begin >= job->m_items)
                    break;
                const std::size_t end = std::min(job->m_items, begin + size);
                // A span per claim, inside the runner's: the timeline shows the shares shrink.
                const std::int64_t traced_since = trace::span_start();
                try {
                    job->m_run(job->m_body, begin, end, *job);
                } catch (...) {
                    job->record_error(begin, std::current_exception());
                }
                trace::record_since("chunk", "thread_pool", traced_since);
                if (job->m_progress != nullptr)
                    job->m_progress->fetch_add(end - begin, std::memory_order_relaxed);
            }
        }
        if (job->m_remaining.fetch_sub(1, std::memory_order_acq_rel) == 1)
            job->finish();
        return !cancel;
    }

    // Read before the claim, so racing claimers may size from a stale position: that only
    // makes a share a little larger, never skips or repeats an item.
    std::size_t claim_size() const noexcept {
        if (m_fixed_chunk != 0)
            return m_fixed_chunk;
        const std::size_t position = m_next.load(std::memory_order_relaxed);
        const std::size_t left = position < m_items ? m_items - position : 0;
        return std::max<std::size_t>(1, left / (2 * m_workers));
    }

    void finish() noexcept {
        if (m_error)
            set_error(std::move(m_error));
        else
            set_value();
        publish();
        release();
    }

    const std::size_t m_items;
    const std::size_t m_workers;
    const std::size_t m_fixed_chunk;
    body_fn m_run;
    void* m_body;
    std::atomic<std::size_t>* m_progress;
    std::vector<runner> m_runners;
    alignas(cache_line) std::atomic<std::size_t> m_next{0};
    alignas(cache_line) std::atomic<std::size_t> m_remaining{0};
    std::mutex m_error_mutex;
    std::size_t m_error_index = std::numeric_limits<std::size_t>::max();
    std::exception_ptr m_error;
};

// Results of a parallel map, built out of order, then moved into a std::vector in order. A raw
// buffer rather than a vector<R>: no default constructor needed, and no vector<bool> whose
// elements share bytes.
template <class R>
class result_buffer {
public:
    explicit result_buffer(std::size_t n) : m_size(n), m_data(std::allocator<R>().allocate(n)) {
        if constexpr (!std::is_trivially_destructible_v<R>)
            m_built = std::make_unique<bool[]>(n);
    }
    result_buffer(const result_buffer&) = delete;
    result_buffer& operator=(const result_buffer&) = delete;
    ~result_buffer() {
        if constexpr (!std::is_trivially_destructible_v<R>) {
            for (std::size_t i = 0; i < m_size; ++i)
                if (m_built[i])
                    m_data[i].~R();
        }
        std::allocator<R>().deallocate(m_data, m_size);
    }

    template <class... Args>
    void emplace(std::size_t i, Args&&... args) {
        ::new (static_cast<void*>(m_data + i)) R(std::forward<Args>(args)...);
        if constexpr (!std::is_trivially_destructible_v<R>)
            m_built[i] = true;
    }

    // Only once every element was built.
    std::vector<R> release_to_vector() {
        std::vector<R> out;
        out.reserve(m_size);
        out.insert(out.end(), std::make_move_iterator(m_data),
                   std::make_move_iterator(m_data + m_size));
        return out;
    }

private:
    std::size_t m_size;
    R* m_data;
    std::unique_ptr<bool[]> m_built;
};

} // namespace triad::detail
