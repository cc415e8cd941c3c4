#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <new>
#include <utility>

#include <pthread.h>
#include <sys/mman.h>

// Recycled memory for task nodes and future states, so that the per-task cost does not depend on
// the state of the process's heap. With glibc, a node allocated by the submitting thread and freed
// by a worker goes back through the allocating arena's lock, and a heap that glibc has trimmed
// faults its pages back in: on a VM, a page fault can cost more than a hundred tasks. Measured on
// the development VM: a million 128-byte allocations cost 520 ns each, every time, because each
// burst's pages were returned and faulted back in.
//
// Here every thread carves its blocks from slabs it maps itself (2 MiB ones as transparent huge
// pages where the kernel allows, so a burst faults once per 2 MiB, not once per 4 KiB) and keeps
// freed blocks on its own free lists; a block freed by another thread goes back to the thread
// that allocated it, in batches, through one lock-free stack per size class. A thread keeps up to
// keep_per_class free blocks per class; the rest, and all of them when it exits (and, later, the
// blocks still in use as they come back), go to a process-wide pool that other threads adopt
// before they map more. So threads that come and go leave nothing behind, and threads that take
// turns with bursts share the same memory. Slabs are never unmapped: the process keeps about
// the most it ever had in flight, up to `max_slab_bytes`; beyond that, blocks come from the heap.
//
// Under AddressSanitizer the cache is bypassed, so that a use after free of a task or a state is
// still reported; ThreadSanitizer keeps it, so the cross-thread protocol is checked.

#if defined(__SANITIZE_ADDRESS__)
#define TRIAD_DETAIL_NODE_CACHE 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TRIAD_DETAIL_NODE_CACHE 0
#endif
#endif
#ifndef TRIAD_DETAIL_NODE_CACHE
#define TRIAD_DETAIL_NODE_CACHE 1
#endif

#ifdef TRIAD_FAULT_INJECTION
// Test-only: a test binary built with TRIAD_FAULT_INJECTION defines this; true makes the next
// node allocation fail as if the system were out of memory.
bool triad_fault_injection_fails() noexcept;
#endif

namespace triad::detail {

class node_cache;

// In front of every block. 16 bytes, so the payload keeps operator new's alignment.
struct alignas(16) node_header {
    node_cache* owner;   // the thread cache it returns to; null for a block from the heap
    std::uint32_t batch; // in a returned batch's first block: how many blocks the batch holds
    std::uint32_t size_class;
};
static_assert(sizeof(node_header) == 16);

// A free block's payload holds the links (it is free memory by then).
struct free_block {
    free_block* next;       // within a list or batch
    free_block* next_batch; // in a batch's first block: the next batch on the owner's stack
    free_block* last;       // in a batch's first block: its last block, so taking it is O(1)
};

inline node_header* header_of(void* payload) noexcept {
    return static_cast<node_header*>(payload) - 1;
}

struct node_sizes {
    static constexpr std::size_t class_count = 5;
    // Payload sizes; a block is the payload plus its header: 64, 128, 192, 256 and 512 bytes.
    static constexpr std::size_t class_payload[class_count] = {48, 112, 176, 240, 496};
    static constexpr int class_of(std::size_t bytes) noexcept {
        for (std::size_t c = 0; c < class_count; ++c)
            if (bytes <= class_payload[c])
                return static_cast<int>(c);
        return -1;
    }
    static constexpr std::size_t block_bytes(std::size_t size_class) noexcept {
        return class_payload[size_class] + sizeof(node_header);
    }
};

// The process-wide part: the slab budget, and the free blocks that exited threads left behind,
// which any thread adopts before it maps more. Slow paths only (a thread's exit, a refill).
class node_pool {
public:
    // Slabs the process may map for task nodes: beyond this, blocks come from the heap.
    static constexpr std::size_t max_slab_bytes = std::size_t{1} << 30;

    static node_pool& instance() noexcept {
        // Leaked on purpose: threads may exit, and give blocks back, after static destructors.
        static node_pool* pool = [] {
            auto* made = new node_pool();
            // A fork while another thread holds the mutex would leave it held in the child (a
            // process pool's workers are forked): hold it across every fork, as glibc's malloc
            // does with its arenas.
            ::pthread_atfork([] { instance().m_mutex.lock(); }, [] { instance().m_mutex.unlock(); },
                             [] { instance().m_mutex.unlock(); });
            return made;
        }();
        return *pool;
    }

    bool reserve_slab(std::size_t bytes) noexcept {
        std::size_t mapped = m_slab_bytes.load(std::memory_order_relaxed);
        do {
            if (mapped + bytes > max_slab_bytes)
                return false;
        } while (
            !m_slab_bytes.compare_exchange_weak(mapped, mapped + bytes, std::memory_order_relaxed));
        return true;
    }

    // A chain of free blocks of one class, linked through `next`.
    void give(std::size_t size_class, free_block* head, free_block* tail, std::size_t count) {
        std::lock_guard lock(m_mutex);
        tail->next = m_free[size_class];
        m_free[size_class] = head;
        m_count[size_class] += count;
        m_count_hint[size_class].store(m_count[size_class], std::memory_order_relaxed);
    }

    // Up to `most` blocks of the class, or null; `count` says how many.
    free_block* take(std::size_t size_class, std::size_t most, std::size_t& count) {
        count = 0;
        if (m_count_hint[size_class].load(std::memory_order_relaxed) == 0)
            return nullptr; // the common case, without the mutex
        std::lock_guard lock(m_mutex);
        free_block* head = m_free[size_class];
        free_block* last = nullptr;
        for (free_block* b = head; b != nullptr && count < most; b = b->next) {
            last = b;
            ++count;
        }
        if (last == nullptr)
            return nullptr;
        m_free[size_class] = last->next;
        last->next = nullptr;
        m_count[size_class] -= count;
        m_count_hint[size_class].store(m_count[size_class], std::memory_order_relaxed);
        return head;
    }

private:
    std::mutex m_mutex;
    free_block* m_free[node_sizes::class_count] = {};
    std::size_t m_count[node_sizes::class_count] = {};
    std::atomic<std::size_t> m_count_hint[node_sizes::class_count] = {};
    std::atomic<std::size_t> m_slab_bytes{0};
};

class node_cache : public node_sizes {
public:
    static constexpr std::size_t first_slab_bytes = std::size_t{64} << 10;
    static constexpr std::size_t huge_slab_bytes = std::size_t{2} << 20;
    // A thread returns another thread's blocks in batches of this many (one atomic each), and
    // adopts left-behind blocks this many at a time.
    static constexpr std::uint32_t batch_size = 64;
    static constexpr std::size_t adopt_size = 512;
    // Free blocks a thread keeps per size class; beyond, they go to the process-wide pool in
    // chains of adopt_size, so that a process holds about its peak in flight, not every
    // thread's own peak (4,096 blocks: 512 KiB of 128-byte ones).
    static constexpr std::uint64_t keep_per_class = 4096;

    // The calling thread's cache, or null once the thread is exiting.
    static node_cache* current() noexcept;

    void* allocate(std::size_t size_class);
    // `block` is owned by this cache and freed on its owner thread.
    void free_local(free_block* block, std::size_t size_class) noexcept;
    // `block` belongs to another cache: batch it for its owner.
    void free_remote(node_header* header, free_block* block) noexcept;
    // Hands every outgoing batch to its owner: before a thread sleeps, so nothing it holds for
    // another thread waits until it wakes up.
    void flush() noexcept;
    // Thread exit: the free blocks go to the process-wide pool, and so do the ones still in use
    // as they come back; the cache object goes when the last of them has.
    void retire() noexcept;
    // A block returned by a thread that has no cache any more (it is exiting).
    void free_batch_of_one(std::size_t size_class, free_block* block) noexcept {
        push_remote(size_class, block, block, 1);
    }

private:
    struct outgoing {
        node_cache* owner = nullptr;
        free_block* head = nullptr;
        free_block* tail = nullptr;
        std::uint32_t count = 0;
    };

    // While the thread lives, the count of blocks owned cannot reach zero: it starts at this.
    static constexpr std::int64_t alive_bias = std::int64_t{1} << 62;

    // Marks a remote stack whose owner has exited: returns to it go to the process-wide pool.
    static free_block* dead() noexcept { return reinterpret_cast<free_block*>(std::uintptr_t{1}); }

    void* carve(std::size_t size_class);
    bool adopt(std::size_t size_class);
    bool map_slab();
    void push_remote(std::size_t size_class, free_block* head, free_block* tail,
                     std::uint32_t count) noexcept;
    void send(outgoing& out, std::size_t size_class) noexcept;
    bool reclaim(std::size_t size_class) noexcept;
    static void to_pool(std::size_t size_class, free_block* head, free_block* tail,
                        std::size_t count) noexcept;
    void blocks_gone(std::int64_t count) noexcept {
        if (m_refs.fetch_sub(count, std::memory_order_acq_rel) == count)
            delete this;
    }

    // Blocks freed past keep_per_class, gathered for the pool (owner-only).
    struct overflow {
        free_block* head = nullptr;
        free_block* tail = nullptr;
        std::size_t count = 0;
    };
    void spill(std::size_t size_class, free_block* head, free_block* tail,
               std::size_t count) noexcept;

    free_block* m_free[class_count] = {};
    std::uint64_t m_free_in[class_count] = {}; // blocks on each free list
    std::uint64_t m_owned = 0; // blocks whose header names this cache (owner-only count)
    overflow m_overflow[class_count];
    char* m_bump = nullptr;
    char* m_bump_end = nullptr;
    std::size_t m_next_slab = first_slab_bytes;
    outgoing m_outgoing[class_count];
    // Once the thread retired: its blocks not yet back. Before: alive_bias.
    std::atomic<std::int64_t> m_refs{alive_bias};
    alignas(64) std::atomic<free_block*> m_remote[class_count] = {};
};

inline void* node_cache::allocate(std::size_t size_class) {
    free_block* block = m_free[size_class];
    if (block == nullptr && (reclaim(size_class) || adopt(size_class)))
        block = m_free[size_class];
    if (block != nullptr) {
        m_free[size_class] = block->next;
        --m_free_in[size_class];
        return block;
    }
    return carve(size_class);
}

// Blocks that exited threads left: each becomes this cache's.
inline bool node_cache::adopt(std::size_t size_class) {
    std::size_t count = 0;
    free_block* head = node_pool::instance().take(size_class, adopt_size, count);
    if (head == nullptr)
        return false;
    free_block* tail = head;
    for (free_block* b = head; b != nullptr; b = b->next) {
        header_of(b)->owner = this;
        tail = b;
    }
    tail->next = m_free[size_class];
    m_free[size_class] = head;
    m_free_in[size_class] += count;
    m_owned += count;
    return true;
}

// Blocks past what this thread keeps leave for the pool: they are this cache's no longer.
inline void node_cache::spill(std::size_t size_class, free_block* head, free_block* tail,
                              std::size_t count) noexcept {
    to_pool(size_class, head, tail, count);
    m_owned -= count;
}

inline void* node_cache::carve(std::size_t size_class) {
    const std::size_t bytes = block_bytes(size_class);
    if (static_cast<std::size_t>(m_bump_end - m_bump) < bytes && !map_slab()) {
        // Over the process's slab budget: a heap block, freed straight back to the heap.
        void* raw = ::operator new(bytes);
        return ::new (raw) node_header{nullptr, 0, static_cast<std::uint32_t>(size_class)} + 1;
    }
    auto* header = ::new (static_cast<void*>(m_bump))
        node_header{this, 0, static_cast<std::uint32_t>(size_class)};
    m_bump += bytes;
    ++m_owned;
    return header + 1;
}

// False if the budget is spent; throws std::bad_alloc if the kernel refuses memory.
inline bool node_cache::map_slab() {
    const std::size_t bytes = m_next_slab;
    if (!node_pool::instance().reserve_slab(bytes))
        return false;
    void* memory = nullptr;
    if (bytes == huge_slab_bytes) {
        // Aligned to 2 MiB, so the kernel can back it with one huge page.
        void* wide =
            ::mmap(nullptr, 2 * bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (wide == MAP_FAILED)
            throw std::bad_alloc();
        const auto start = reinterpret_cast<std::uintptr_t>(wide);
        const std::uintptr_t aligned = (start + bytes - 1) & ~(std::uintptr_t{bytes} - 1);
        if (aligned > start)
            ::munmap(wide, aligned - start);
        if (aligned + bytes < start + 2 * bytes)
            ::munmap(reinterpret_cast<void*>(aligned + bytes), start + 2 * bytes - aligned - bytes);
        memory = reinterpret_cast<void*>(aligned);
        ::madvise(memory, bytes, MADV_HUGEPAGE); // a hint: without THP, normal pages
    } else {
        memory = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (memory == MAP_FAILED)
            throw std::bad_alloc();
        m_next_slab = bytes * 2;
    }
    m_bump = static_cast<char*>(memory);
    m_bump_end = static_cast<char*>(memory) + bytes;
    return true;
}

inline void node_cache::free_local(free_block* block, std::size_t size_class) noexcept {
    if (m_free_in[size_class] < keep_per_class) {
        block->next = m_free[size_class];
        m_free[size_class] = block;
        ++m_free_in[size_class];
        return;
    }
    overflow& out = m_overflow[size_class];
    block->next = out.head;
    if (out.head == nullptr)
        out.tail = block;
    out.head = block;
    if (++out.count == adopt_size) {
        spill(size_class, out.head, out.tail, out.count);
        out = overflow{};
    }
}

inline void node_cache::free_remote(node_header* header, free_block* block) noexcept {
    outgoing& out = m_outgoing[header->size_class];
    if (out.owner != header->owner) {
        send(out, header->size_class);
        out.owner = header->owner;
    }
    block->next = nullptr;
    if (out.tail == nullptr)
        out.head = block;
    else
        out.tail->next = block;
    out.tail = block;
    if (++out.count == batch_size)
        send(out, header->size_class);
}

inline void node_cache::flush() noexcept {
    for (std::size_t c = 0; c < class_count; ++c)
        send(m_outgoing[c], c);
}

inline void node_cache::send(outgoing& out, std::size_t size_class) noexcept {
    if (out.count == 0)
        return;
    out.owner->push_remote(size_class, out.head, out.tail, out.count);
    out = outgoing{};
}

inline void node_cache::to_pool(std::size_t size_class, free_block* head, free_block* tail,
                                std::size_t count) noexcept {
    try {
        node_pool::instance().give(size_class, head, tail, count);
    } catch (...) {
        // std::mutex::lock failed (it does not, in practice): the blocks are lost, not misused.
    }
}

inline void node_cache::push_remote(std::size_t size_class, free_block* head, free_block* tail,
                                    std::uint32_t count) noexcept {
    header_of(head)->batch = count;
    head->last = tail;
    tail->next = nullptr;
    std::atomic<free_block*>& stack = m_remote[size_class];
    free_block* top = stack.load(std::memory_order_relaxed);
    do {
        if (top == dead()) {
            // The owner has exited: the blocks go to whoever adopts them.
            to_pool(size_class, head, tail, count);
            blocks_gone(count);
            return;
        }
        head->next_batch = top;
    } while (!stack.compare_exchange_weak(top, head, std::memory_order_release,
                                          std::memory_order_relaxed));
}

inline bool node_cache::reclaim(std::size_t size_class) noexcept {
    std::atomic<free_block*>& stack = m_remote[size_class];
    if (stack.load(std::memory_order_relaxed) == nullptr)
        return false;
    free_block* batches = stack.exchange(nullptr, std::memory_order_acquire);
    if (batches == nullptr)
        return false;
    while (batches != nullptr) {
        free_block* next_batch = batches->next_batch;
        const std::uint32_t count = header_of(batches)->batch;
        if (m_free_in[size_class] < keep_per_class) {
            m_free_in[size_class] += count;
            batches->last->next = m_free[size_class];
            m_free[size_class] = batches;
        } else {
            spill(size_class, batches, batches->last, count);
        }
        batches = next_batch;
    }
    return m_free[size_class] != nullptr;
}

inline void node_cache::retire() noexcept {
    flush();
    std::uint64_t given = 0;
    for (std::size_t c = 0; c < class_count; ++c) {
        (void)reclaim(c);
        if (m_overflow[c].count != 0) {
            spill(c, m_overflow[c].head, m_overflow[c].tail, m_overflow[c].count);
            m_overflow[c] = overflow{};
        }
        // From now on, returns to this cache go straight to the pool.
        for (free_block* batch = m_remote[c].exchange(dead(), std::memory_order_acquire);
             batch != nullptr;) {
            free_block* next_batch = batch->next_batch;
            const std::uint32_t count = header_of(batch)->batch;
            to_pool(c, batch, batch->last, count);
            given += count;
            batch = next_batch;
        }
        if (free_block* head = std::exchange(m_free[c], nullptr)) {
            std::size_t count = 1;
            free_block* tail = head;
            while (tail->next != nullptr) {
                tail = tail->next;
                ++count;
            }
            to_pool(c, head, tail, count);
            given += count;
        }
    }
    for (auto& count : m_free_in)
        count = 0;
    // m_refs counts the blocks still out from now on; the bias goes, and the last block to come
    // back (or this, if none is out) deletes the cache object.
    const auto out = static_cast<std::int64_t>(m_owned - given);
    m_refs.fetch_add(out, std::memory_order_relaxed);
    blocks_gone(alive_bias);
}

// The thread's cache is made on first use. The pointer is a plain thread_local (no guard on the
// hot path). Retiring it at thread exit is a pthread key's destructor, not a C++ thread_local's:
// key destructors run after thread_local ones, and again if a destructor sets a key, so even a
// cache first used while another key's destructor frees a future is retired.
inline thread_local node_cache* tls_node_cache = nullptr;
inline thread_local bool tls_node_cache_retired = false;

inline void retire_node_cache(void* cache) noexcept {
    tls_node_cache = nullptr;
    tls_node_cache_retired = true;
    static_cast<node_cache*>(cache)->retire();
}

inline pthread_key_t node_cache_key() noexcept {
    static const pthread_key_t key = [] {
        pthread_key_t made{};
        if (::pthread_key_create(&made, &retire_node_cache) != 0)
            std::abort(); // keys are exhausted: nothing sensible is left to do
        return made;
    }();
    return key;
}

inline node_cache* node_cache::current() noexcept {
    if (node_cache* cache = tls_node_cache)
        return cache;
    if (tls_node_cache_retired)
        return nullptr;
    const pthread_key_t key = node_cache_key();
    auto* cache = new (std::nothrow) node_cache();
    if (cache == nullptr)
        return nullptr;
    if (::pthread_setspecific(key, cache) != 0) {
        delete cache; // nothing was carved from it yet
        return nullptr;
    }
    tls_node_cache = cache;
    return cache;
}

// Allocation for task nodes and future states: a block of the size class of `bytes`, or the
// heap for larger ones.
inline void* allocate_node(std::size_t bytes) {
#ifdef TRIAD_FAULT_INJECTION
    if (triad_fault_injection_fails())
        throw std::bad_alloc();
#endif
#if TRIAD_DETAIL_NODE_CACHE
    const int size_class = node_sizes::class_of(bytes);
    if (size_class >= 0) {
        const auto c = static_cast<std::size_t>(size_class);
        if (node_cache* cache = node_cache::current())
            return cache->allocate(c);
        // A thread that is exiting: a block with no owner, which goes straight back to the heap.
        void* raw = ::operator new(node_sizes::block_bytes(c));
        return ::new (raw) node_header{nullptr, 0, static_cast<std::uint32_t>(c)} + 1;
    }
#endif
    return ::operator new(bytes);
}

// `bytes` must be what was passed to allocate_node.
inline void deallocate_node(void* payload, [[maybe_unused]] std::size_t bytes) noexcept {
#if TRIAD_DETAIL_NODE_CACHE
    if (node_sizes::class_of(bytes) >= 0) {
        node_header* header = header_of(payload);
        auto* block = static_cast<free_block*>(payload);
        if (header->owner == nullptr) {
            ::operator delete(static_cast<void*>(header));
            return;
        }
        node_cache* cache = node_cache::current();
        if (cache == header->owner)
            cache->free_local(block, header->size_class);
        else if (cache != nullptr)
            cache->free_remote(header, block);
        else // this thread is exiting: hand the block back on its own
            header->owner->free_batch_of_one(header->size_class, block);
        return;
    }
#endif
    ::operator delete(payload);
}

// Hands the calling thread's outgoing batches to their owners (a worker calls it before it
// sleeps).
inline void flush_node_cache() noexcept {
#if TRIAD_DETAIL_NODE_CACHE
    if (node_cache* cache = tls_node_cache)
        cache->flush();
#endif
}

// Base of every task node and future state: their allocations go through the cache. Static
// member functions found through several bases of this one type are not ambiguous, so a type
// that is both a task node and a state (a submitted task) allocates the same way.
struct pooled_node {
    static void* operator new(std::size_t bytes) { return allocate_node(bytes); }
    static void operator delete(void* p, std::size_t bytes) noexcept { deallocate_node(p, bytes); }
    // Over-aligned callables bypass the cache, which guarantees only 16 bytes.
    static void* operator new(std::size_t bytes, std::align_val_t align) {
        return ::operator new(bytes, align);
    }
    static void operator delete(void* p, std::size_t, std::align_val_t align) noexcept {
        ::operator delete(p, align);
    }
    // What a new-expression of an over-aligned type calls when the constructor throws: without
    // it, that memory leaked (found by the allocation-failure test under LeakSanitizer).
    static void operator delete(void* p, std::align_val_t align) noexcept {
        ::operator delete(p, align);
    }
};

} // namespace triad::detail
