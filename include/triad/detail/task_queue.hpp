#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <vector>

#include <triad/detail/node_cache.hpp>
#include <triad/detail/wait_slot.hpp>

namespace triad::detail {

inline constexpr std::size_t cache_line = 64;

struct drain_scope;

// A unit of work in a thread pool's queues: intrusive, so queueing never allocates.
struct task_node : pooled_node {
    // Runs the task (or, with `cancel`, drops it and fails its future) and then frees it; nothing
    // may touch the node afterwards. Returns false if the task did not run (cancelled, by the
    // pool or by its future).
    using execute_fn = bool (*)(task_node* self, bool cancel) noexcept;

    explicit task_node(execute_fn execute) noexcept : m_execute(execute) {}

    bool execute(bool cancel) noexcept { return m_execute(this, cancel); }

    // Set when the task was submitted from inside the pool during a drain: the pre-shutdown task
    // it descends from, which must still be running for it to start (see scheduler::execute).
    drain_scope* scope() const noexcept {
        return reinterpret_cast<drain_scope*>(m_scope_and_epoch & ~std::uintptr_t{1});
    }
    // Which of the two wait_idle generations counts this task.
    unsigned epoch() const noexcept { return static_cast<unsigned>(m_scope_and_epoch & 1); }
    void set_scope_and_epoch(drain_scope* scope, unsigned epoch) noexcept {
        m_scope_and_epoch = reinterpret_cast<std::uintptr_t>(scope) | (epoch & 1);
    }

    task_node* m_next = nullptr;
    execute_fn m_execute;
    // Where its result goes, if anyone can wait for it (a submitted task's own state), so that
    // the drain can tell work somebody is blocked on.
    const wait_slot* m_result = nullptr;

private:
    // The scope pointer with the epoch in its low bit (scopes are aligned): a node stays at 32
    // bytes, so a submitted task with a small callable fits the cache's 128-byte blocks.
    std::uintptr_t m_scope_and_epoch = 0;
};

// Where threads outside the pool drop their tasks: a Treiber stack that producers push onto and a
// worker empties in one exchange. There is no single-node pop, so there is no ABA problem, and a
// worker takes a whole burst of submissions with one atomic operation.
class injection_stack {
public:
    void push(task_node* node) noexcept { push_chain(node, node); }

    // Pushes a chain linked through m_next from its newest to its oldest node, in one step.
    void push_chain(task_node* newest, task_node* oldest) noexcept {
        task_node* head = m_head.load(std::memory_order_relaxed);
        do {
            oldest->m_next = head;
        } while (!m_head.compare_exchange_weak(head, newest, std::memory_order_seq_cst,
                                               std::memory_order_relaxed));
    }

    // Takes everything, newest first: pushed in that order onto a work-stealing deque, whose
    // owner pops the newest, the oldest comes out first.
    task_node* take_all() noexcept {
        if (m_head.load(std::memory_order_relaxed) == nullptr)
            return nullptr;
        return m_head.exchange(nullptr, std::memory_order_acquire);
    }

    bool empty() const noexcept { return m_head.load(std::memory_order_seq_cst) == nullptr; }

private:
    alignas(cache_line) std::atomic<task_node*> m_head{nullptr};
};

// The Chase-Lev work-stealing deque (Lê, Pop, Cohen, Zappa Nardelli, PPoPP 2013). The owner
// pushes and pops at the bottom (LIFO: the task it just made is hot in cache); thieves take from
// the top. The paper's fences are folded into seq_cst accesses so ThreadSanitizer, which does not
// model stand-alone fences, can check it.
class work_stealing_deque {
public:
    work_stealing_deque() { m_ring.store(make_ring(initial_capacity), std::memory_order_relaxed); }
    work_stealing_deque(const work_stealing_deque&) = delete;
    work_stealing_deque& operator=(const work_stealing_deque&) = delete;

    // Owner only.
    void push(task_node* node) {
        const std::int64_t bottom = m_bottom.load(std::memory_order_relaxed);
        const std::int64_t top = m_top.load(std::memory_order_acquire);
        ring* r = m_ring.load(std::memory_order_relaxed);
        if (bottom - top >= r->capacity())
            r = grow(r, top, bottom);
        r->put(bottom, node);
        // seq_cst: pairs with a sleeping worker's announcement, so either the sleeper sees this
        // task or the pusher sees the sleeper and wakes it.
        m_bottom.store(bottom + 1, std::memory_order_seq_cst);
    }

    // Owner only.
    task_node* pop() noexcept {
        const std::int64_t bottom = m_bottom.load(std::memory_order_relaxed) - 1;
        ring* r = m_ring.load(std::memory_order_relaxed);
        m_bottom.store(bottom, std::memory_order_seq_cst);
        std::int64_t top = m_top.load(std::memory_order_seq_cst);
        if (top > bottom) {
            m_bottom.store(bottom + 1, std::memory_order_relaxed);
            return nullptr;
        }
        task_node* node = r->get(bottom);
        if (top == bottom) {
            // The last task: race the thieves for it.
            if (!m_top.compare_exchange_strong(top, top + 1, std::memory_order_seq_cst,
                                               std::memory_order_relaxed))
                node = nullptr;
            m_bottom.store(bottom + 1, std::memory_order_relaxed);
        }
        return node;
    }

    // Any thread.
    task_node* steal() noexcept {
        std::int64_t top = m_top.load(std::memory_order_seq_cst);
        const std::int64_t bottom = m_bottom.load(std::memory_order_seq_cst);
        if (top >= bottom)
            return nullptr;
        ring* r = m_ring.load(std::memory_order_acquire);
        task_node* node = r->get(top);
        if (!m_top.compare_exchange_strong(top, top + 1, std::memory_order_seq_cst,
                                           std::memory_order_relaxed))
            return nullptr;
        return node;
    }

    bool empty() const noexcept {
        return m_top.load(std::memory_order_seq_cst) >= m_bottom.load(std::memory_order_seq_cst);
    }

    std::size_t size_hint() const noexcept {
        const std::int64_t n =
            m_bottom.load(std::memory_order_relaxed) - m_top.load(std::memory_order_relaxed);
        return n > 0 ? static_cast<std::size_t>(n) : 0;
    }

private:
    static constexpr std::int64_t initial_capacity = 256;

    class ring {
    public:
        explicit ring(std::int64_t capacity)
            : m_mask(capacity - 1), m_slots(std::make_unique<std::atomic<task_node*>[]>(
                                        static_cast<std::size_t>(capacity))) {}
        std::int64_t capacity() const noexcept { return m_mask + 1; }
        void put(std::int64_t i, task_node* node) noexcept {
            m_slots[static_cast<std::size_t>(i & m_mask)].store(node, std::memory_order_relaxed);
        }
        task_node* get(std::int64_t i) const noexcept {
            return m_slots[static_cast<std::size_t>(i & m_mask)].load(std::memory_order_relaxed);
        }

    private:
        std::int64_t m_mask;
        std::unique_ptr<std::atomic<task_node*>[]> m_slots;
    };

    ring* make_ring(std::int64_t capacity) {
        m_rings.push_back(std::make_unique<ring>(capacity));
        return m_rings.back().get();
    }

    ring* grow(ring* old, std::int64_t top, std::int64_t bottom) {
        ring* bigger = make_ring(old->capacity() * 2);
        for (std::int64_t i = top; i < bottom; ++i)
            bigger->put(i, old->get(i));
        m_ring.store(bigger, std::memory_order_release);
        return bigger;
    }

    alignas(cache_line) std::atomic<std::int64_t> m_top{0};
    alignas(cache_line) std::atomic<std::int64_t> m_bottom{0};
    alignas(cache_line) std::atomic<ring*> m_ring{nullptr};
    // Thieves may still read a ring that was replaced, so every ring lives as long as the deque.
    std::vector<std::unique_ptr<ring>> m_rings;
};

} // namespace triad::detail
