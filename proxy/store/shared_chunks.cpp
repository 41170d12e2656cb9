#include "proxy/store/shared_chunks.hpp"

namespace regpin::proxy::store {

shared_chunks::shared_chunks() : state_(std::make_shared<state>()) {}

shared_chunks::chunk_ptr shared_chunks::find(const storage::digest& d, std::uint64_t index) const {
    std::lock_guard lock(state_->mutex);
    auto it = state_->entries.find(key{d, index});
    return it == state_->entries.end() ? nullptr : it->second.copy.lock();
}

storage::result<shared_chunks::chunk_ptr> shared_chunks::get(const storage::blob_store& blobs,
                                                             const storage::digest& d,
                                                             std::uint64_t index) {
    key k{d, index};
    std::unique_lock lock(state_->mutex);
    while (true) {
        auto it = state_->entries.find(k);
        if (it == state_->entries.end()) break;
        if (auto held = it->second.copy.lock()) return held;
        if (!it->second.reading) break;
        state_->read_done.wait(lock);
    }
    state_->entries[k].reading = true;
    lock.unlock();
    storage::chunk read;
    auto r = blobs.read_chunk(d, index, read);
    lock.lock();
    // Still there: a reading entry is never forgotten.
    auto& e = state_->entries[k];
    e.reading = false;
    state_->read_done.notify_all();
    if (!r) {
        // (Not copy.lock(): dropping the last reference under the lock would deadlock.)
        if (e.copy.expired()) state_->entries.erase(k);
        return r.error();
    }
    if (auto held = e.copy.lock()) return held;  // adopted while this thread read
    return share_locked(e, k, std::move(read));
}

shared_chunks::chunk_ptr shared_chunks::adopt(const storage::digest& d, std::uint64_t index,
                                              storage::chunk read) {
    key k{d, index};
    std::lock_guard lock(state_->mutex);
    auto& e = state_->entries[k];
    if (auto held = e.copy.lock()) return held;
    return share_locked(e, k, std::move(read));
}

std::size_t shared_chunks::size() const {
    std::lock_guard lock(state_->mutex);
    return state_->entries.size();
}

shared_chunks::chunk_ptr shared_chunks::share_locked(entry& e, const key& k, storage::chunk read) {
    std::weak_ptr<state> owner = state_;
    chunk_ptr copy(new storage::chunk(std::move(read)), [owner, k](const storage::chunk* c) {
        delete c;
        if (auto s = owner.lock()) s->released(k);
    });
    e.copy = copy;
    return copy;
}

void shared_chunks::state::released(const key& k) {
    std::lock_guard lock(mutex);
    auto it = entries.find(k);
    if (it != entries.end() && !it->second.reading && it->second.copy.expired()) entries.erase(it);
}

}  // namespace regpin::proxy::store
