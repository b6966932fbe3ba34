#include "core/device/hot_load.h"

namespace vecgpu {

HotAction HotLoad::Observe(const LoadSample& s, int copies, int max_copies,
                           const HotCopyPolicy& p) {
  if (!window_) window_ = s;
  const bool deep = copies > 0 && s.queued >= int64_t{p.add_depth} * copies;
  if (!deep) {
    deep_since_.reset();
  } else if (!deep_since_) {
    deep_since_ = s.at;
  }
  deep_for_ = deep_since_ ? s.at - *deep_since_ : std::chrono::duration<double>(0);
  saturated_ = 0;
  if (deep && copies < max_copies && deep_for_ >= p.add_after) return HotAction::kAddCopy;
  if (!add_window_) add_window_ = s;
  const std::chrono::duration<double> add_window = s.at - add_window_->at;
  if (add_window >= p.add_after) {
    const double share = copies > 0 && add_window.count() > 0
                             ? (s.busy_seconds - add_window_->busy_seconds) /
                                   (add_window.count() * copies)
                             : 0;
    add_window_ = s;
    if (copies < max_copies && share >= p.add_busy) {
      saturated_ = share;
      return HotAction::kAddCopy;
    }
  }

  const std::chrono::duration<double> window = s.at - window_->at;
  if (window < p.drop_after) return HotAction::kNone;
  // A whole window has passed: judge it, then start the next one here.
  const double busy = s.busy_seconds - window_->busy_seconds;
  window_ = s;
  if (copies > 1 && !deep && window.count() > 0 &&
      busy / (window.count() * (copies - 1)) < p.drop_busy) {
    return HotAction::kDropCopy;
  }
  return HotAction::kNone;
}

void HotLoad::Restart(const LoadSample& s) {
  deep_since_.reset();
  deep_for_ = std::chrono::duration<double>(0);
  window_ = s;
  add_window_ = s;
}

}  // namespace vecgpu
