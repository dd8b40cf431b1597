// Threshold curves and their areas (see curves.h for the definitions and the official code they follow).
//
// Pixel-level data can be a whole category's test set (150 images of 1024 x 1024 = 157 million scores), so the
// accumulator keeps 8 bytes per pixel (score key + class) and never sorts them fully: one in-place American-flag
// partition by the top 16 key bits, then each bucket independently aggregates its distinct keys (a sort for small
// buckets, a direct-indexed table over the low 16 bits for large ones) and sweeps them, starting from the cumulative
// counts of all higher buckets. Buckets run in parallel; their partial areas are merged in bucket order, so the
// result does not depend on the thread count.
#include "curves.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <mutex>
#include <numeric>
#include <string>
#include <unordered_map>

#include "components.h"
#include "parallel.h"

namespace imiad {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr size_t kBuckets = 1u << 16;

struct SweepStart {
  uint64_t neg = 0;
  uint64_t pos = 0;
  double weight = 0;
};

// Walks merged thresholds in descending score order, accumulating the ROC area (exactly, in integers), the AP
// sum, the F1 maximum and, per integration limit, the trapezoid area of the (FPR, PRO) curve with the official
// interpolation at the limit.
class Sweep {
 public:
  Sweep(uint64_t totalNeg, uint64_t totalPos, double units, const std::vector<double>& limits, const SweepStart& start)
      : totalNeg_(totalNeg),
        totalPos_(totalPos),
        invNeg_(totalNeg > 0 ? 1.0 / static_cast<double>(totalNeg) : kNaN),
        units_(units),
        limits_(limits),
        state_(start) {
    area.assign(limits.size(), 0.0);
    correction.assign(limits.size(), 0.0);
    x0_ = fpr(state_.neg);
    y0_ = pro(state_.weight);
  }

  void group(uint64_t dNeg, uint64_t dPos, double dWeight) {
    ++groups;
    const uint64_t posBefore = state_.pos;
    state_.neg += dNeg;
    state_.pos += dPos;
    state_.weight += dWeight;
    roc2 += static_cast<unsigned __int128>(dNeg) * (2 * static_cast<unsigned __int128>(posBefore) + dPos);
    if (dPos > 0) {
      const double tp = static_cast<double>(state_.pos);
      ap += static_cast<double>(dPos) * (tp / (tp + static_cast<double>(state_.neg)));
      const double f1 = 2.0 * tp / (tp + static_cast<double>(state_.neg) + static_cast<double>(totalPos_));
      if (f1 > f1Max) f1Max = f1;
    }
    if (limits_.empty()) return;
    const double x1 = fpr(state_.neg);
    const double y1 = pro(state_.weight);
    for (size_t l = 0; l < limits_.size(); ++l) {
      const double limit = limits_[l];
      if (x1 <= limit) {
        area[l] += 0.5 * (y0_ + y1) * (x1 - x0_);
      } else if (x0_ <= limit) {
        // The one segment that crosses the limit: generic_util.trapezoid's correction term.
        const double yInterp = y0_ + (y1 - y0_) * (limit - x0_) / (x1 - x0_);
        correction[l] = 0.5 * (yInterp + y0_) * (limit - x0_);
      }
    }
    x0_ = x1;
    y0_ = y1;
  }

  unsigned __int128 roc2 = 0;
  double ap = 0;
  double f1Max = 0;
  uint64_t groups = 0;
  std::vector<double> area;
  std::vector<double> correction;

 private:
  double fpr(uint64_t neg) const { return std::min(static_cast<double>(neg) * invNeg_, 1.0); }
  double pro(double weight) const { return units_ > 0 ? std::min(weight / units_, 1.0) : kNaN; }

  uint64_t totalNeg_, totalPos_;
  double invNeg_, units_;
  const std::vector<double>& limits_;
  SweepStart state_;
  double x0_ = 0, y0_ = 0;
};

BinaryMetrics finishBinary(unsigned __int128 roc2, double apSum, double f1Max, uint64_t neg, uint64_t pos,
                           uint64_t groups) {
  BinaryMetrics m;
  m.negatives = neg;
  m.positives = pos;
  m.thresholds = groups;
  m.auroc = (neg > 0 && pos > 0)
                ? static_cast<double>(static_cast<long double>(roc2) /
                                      (2.0L * static_cast<long double>(neg) * static_cast<long double>(pos)))
                : kNaN;
  m.ap = pos > 0 ? apSum / static_cast<double>(pos) : kNaN;
  m.f1Max = pos > 0 ? f1Max : kNaN;
  return m;
}

}  // namespace

double trapezoid(const std::vector<double>& xIn, const std::vector<double>& yIn, double xMax) {
  std::vector<double> x, y;
  x.reserve(xIn.size());
  y.reserve(yIn.size());
  for (size_t i = 0; i < xIn.size() && i < yIn.size(); ++i) {
    if (std::isfinite(xIn[i]) && std::isfinite(yIn[i])) {
      x.push_back(xIn[i]);
      y.push_back(yIn[i]);
    }
  }
  double correction = 0;
  if (!std::isnan(xMax)) {
    if (std::find(x.begin(), x.end(), xMax) == x.end()) {
      const size_t ins = static_cast<size_t>(std::upper_bound(x.begin(), x.end(), xMax) - x.begin());
      if (ins == 0 || ins >= x.size()) {
        throw InvalidArgument("ERR_IMIAD_RANGE", "Expected the integration limit " + std::to_string(xMax) +
                                                     " to lie within the curve's x range");
      }
      const double yInterp = y[ins - 1] + (y[ins] - y[ins - 1]) * (xMax - x[ins - 1]) / (x[ins] - x[ins - 1]);
      correction = 0.5 * (yInterp + y[ins - 1]) * (xMax - x[ins - 1]);
    }
    size_t keep = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      if (x[i] <= xMax) {
        x[keep] = x[i];
        y[keep] = y[i];
        ++keep;
      }
    }
    x.resize(keep);
    y.resize(keep);
  }
  double area = 0;
  for (size_t i = 1; i < x.size(); ++i) area += 0.5 * (y[i] + y[i - 1]) * (x[i] - x[i - 1]);
  return area + correction;
}

BinaryMetrics binaryMetrics(const double* scores, const uint8_t* labels, size_t n) {
  std::vector<uint32_t> order(n);
  std::iota(order.begin(), order.end(), 0u);
  std::sort(order.begin(), order.end(), [scores](uint32_t a, uint32_t b) {
    return scores[a] > scores[b] || (scores[a] == scores[b] && a < b);
  });
  uint64_t neg = 0, pos = 0;
  for (size_t i = 0; i < n; ++i) (labels[i] ? pos : neg)++;
  const std::vector<double> noLimits;
  Sweep sweep(neg, pos, 0.0, noLimits, SweepStart{});
  size_t i = 0;
  while (i < n) {
    const double s = scores[order[i]];
    uint64_t dNeg = 0, dPos = 0;
    for (; i < n && scores[order[i]] == s; ++i) (labels[order[i]] ? dPos : dNeg)++;
    sweep.group(dNeg, dPos, 0.0);
  }
  return finishBinary(sweep.roc2, sweep.ap, sweep.f1Max, neg, pos, sweep.groups);
}

PixelAccumulator::PixelAccumulator() { combos_.push_back(0.0); }

void PixelAccumulator::addBinary(const std::vector<BinaryImage>& images, bool regions, const RunControl& control) {
  const size_t base = records_.size();
  std::vector<size_t> offsets(images.size() + 1, base);
  for (size_t i = 0; i < images.size(); ++i) {
    offsets[i + 1] = offsets[i] + static_cast<size_t>(images[i].width) * images[i].height;
  }
  records_.resize(offsets.back());
  std::vector<uint64_t> imageUnits(images.size(), 0);
  std::mutex progressMutex;
  size_t done = 0;
  try {
    parallelChunks(images.size(), 1, [&](size_t, size_t begin, size_t end) {
      std::vector<uint32_t> labels;
      std::vector<uint32_t> areas;
      for (size_t i = begin; i < end; ++i) {
        control.throwIfCancelled();
        const BinaryImage& img = images[i];
        const size_t n = static_cast<size_t>(img.width) * img.height;
        PixelRecord* out = records_.data() + offsets[i];
        if (img.mask == nullptr) {
          for (size_t p = 0; p < n; ++p) out[p] = {scoreKey(img.scores[p]), 0};
        } else if (!regions) {
          for (size_t p = 0; p < n; ++p) out[p] = {scoreKey(img.scores[p]), img.mask[p] ? kComboFlag : 0u};
        } else {
          labels.resize(n);
          const uint32_t count = labelComponents(img.mask, img.width, img.height, labels.data());
          areas.assign(static_cast<size_t>(count) + 1, 0);
          for (size_t p = 0; p < n; ++p) areas[labels[p]]++;
          areas[0] = 0;  // normal pixels: class 0
          for (size_t p = 0; p < n; ++p) out[p] = {scoreKey(img.scores[p]), areas[labels[p]]};
          imageUnits[i] = count;
        }
        std::lock_guard<std::mutex> lock(progressMutex);
        control.report(++done, images.size());
      }
    });
  } catch (...) {
    records_.resize(base);
    throw;
  }
  for (uint64_t u : imageUnits) units_ += u;
}

void PixelAccumulator::addChannels(const std::vector<ChannelImage>& images, const RunControl& control) {
  constexpr uint32_t kSeveral = 0xffffffffu;  // marks a pixel saturating more than one channel
  const size_t base = records_.size();
  std::vector<size_t> offsets(images.size() + 1, base);
  for (size_t i = 0; i < images.size(); ++i) {
    offsets[i + 1] = offsets[i] + static_cast<size_t>(images[i].width) * images[i].height;
  }
  records_.resize(offsets.back());
  std::vector<std::vector<double>> localCombos(images.size());
  std::mutex progressMutex;
  size_t done = 0;
  try {
    parallelChunks(images.size(), 1, [&](size_t, size_t begin, size_t end) {
      std::vector<uint32_t> selected;
      std::vector<uint32_t> members;
      for (size_t i = begin; i < end; ++i) {
        control.throwIfCancelled();
        const ChannelImage& img = images[i];
        const size_t n = static_cast<size_t>(img.width) * img.height;
        const float* s = img.scores;
        selected.assign(n, 0);
        std::unordered_map<size_t, double> several;
        for (size_t c = 0; c < img.channels.size(); ++c) {
          const uint8_t* ch = img.channels[c];
          members.clear();
          for (size_t p = 0; p < n; ++p) {
            if (ch[p]) members.push_back(static_cast<uint32_t>(p));
          }
          const uint64_t sat = img.saturation[c];
          if (sat < 1 || sat > members.size() || sat >= kComboFlag) {
            throw InvalidArgument("ERR_IMIAD_RANGE", "Expected a saturation area between 1 and the channel's area (" +
                                                         std::to_string(members.size()) + ") but received " +
                                                         std::to_string(sat));
          }
          // The sat highest-scoring pixels of the channel carry its sPRO weight 1/sat each: after any threshold,
          // the covered weight is then min(TP, sat) / sat exactly, whatever order ties are taken in.
          if (sat < members.size()) {
            std::nth_element(members.begin(), members.begin() + static_cast<ptrdiff_t>(sat), members.end(),
                             [s](uint32_t a, uint32_t b) { return s[a] > s[b] || (s[a] == s[b] && a < b); });
          }
          for (size_t k = 0; k < sat; ++k) {
            const uint32_t p = members[k];
            if (selected[p] == 0) {
              selected[p] = static_cast<uint32_t>(sat);
            } else {
              const double before = selected[p] == kSeveral ? several[p] : 1.0 / selected[p];
              several[p] = before + 1.0 / static_cast<double>(sat);
              selected[p] = kSeveral;
            }
          }
        }
        PixelRecord* out = records_.data() + offsets[i];
        std::vector<double>& combos = localCombos[i];
        for (size_t p = 0; p < n; ++p) {
          uint32_t cls = 0;
          if (selected[p] == kSeveral) {
            combos.push_back(several[p]);
            cls = kComboFlag | static_cast<uint32_t>(combos.size());  // local index, 1-based; remapped below
          } else if (selected[p] != 0) {
            cls = selected[p];
          } else {
            for (const uint8_t* ch : img.channels) {
              if (ch[p]) {
                cls = kComboFlag;  // inside a defect but beyond its saturation: weight 0
                break;
              }
            }
          }
          out[p] = {scoreKey(s[p]), cls};
        }
        std::lock_guard<std::mutex> lock(progressMutex);
        control.report(++done, images.size());
      }
    });
  } catch (...) {
    records_.resize(base);
    throw;
  }
  for (size_t i = 0; i < images.size(); ++i) {
    units_ += images[i].channels.size();
    if (localCombos[i].empty()) continue;
    const uint32_t shift = static_cast<uint32_t>(combos_.size()) - 1;
    combos_.insert(combos_.end(), localCombos[i].begin(), localCombos[i].end());
    for (size_t r = offsets[i]; r < offsets[i + 1]; ++r) {
      uint32_t& cls = records_[r].cls;
      if ((cls & kComboFlag) && cls != kComboFlag) cls += shift;
    }
  }
}

PixelMetrics PixelAccumulator::compute(const std::vector<double>& limits, const RunControl& control) {
  const size_t n = records_.size();
  if (n == 0) throw InvalidArgument("ERR_IMIAD_EMPTY", "Expected at least one pixel before computing metrics");
  PixelRecord* rec = records_.data();

  // Histogram of the top 16 key bits, per fixed chunk (counts are integers, so merging order is irrelevant).
  constexpr size_t kHistChunk = size_t(1) << 22;
  const size_t histChunks = (n + kHistChunk - 1) / kHistChunk;
  std::vector<std::vector<uint32_t>> partial(histChunks);
  parallelChunks(n, kHistChunk, [&](size_t c, size_t begin, size_t end) {
    control.throwIfCancelled();
    std::vector<uint32_t>& h = partial[c];
    h.assign(kBuckets, 0);
    for (size_t i = begin; i < end; ++i) h[rec[i].key >> 16]++;
  });
  std::vector<uint64_t> start(kBuckets + 1, 0);
  for (const auto& h : partial) {
    for (size_t b = 0; b < kBuckets; ++b) start[b + 1] += h[b];
  }
  for (size_t b = 0; b < kBuckets; ++b) start[b + 1] += start[b];

  // Stable counting-sort scatter by the top 16 key bits into a second buffer (the only moment the accumulator holds
  // 16 bytes per pixel). Each fixed chunk writes from its own offsets, so the chunks scatter in parallel and the
  // result is the same for any thread count. An in-place (American flag) partition was tried first: its cycle
  // leader is one long chain of dependent cache misses and ran several times slower on 1024 x 1024 maps.
  {
    PixelRecords sorted(n);
    std::vector<std::vector<uint64_t>> offsets(histChunks);
    std::vector<uint64_t> running(start.begin(), start.end() - 1);
    for (size_t c = 0; c < histChunks; ++c) {
      offsets[c] = running;
      for (size_t b = 0; b < kBuckets; ++b) running[b] += partial[c][b];
    }
    partial.clear();
    partial.shrink_to_fit();
    PixelRecord* out = sorted.data();
    parallelChunks(n, kHistChunk, [&](size_t c, size_t begin, size_t end) {
      control.throwIfCancelled();
      std::vector<uint64_t>& next = offsets[c];
      for (size_t i = begin; i < end; ++i) out[next[rec[i].key >> 16]++] = rec[i];
      std::vector<uint64_t>().swap(next);
    });
    records_.swap(sorted);
    rec = records_.data();
  }
  control.report(1, 3);

  const std::vector<double>& combos = combos_;
  auto weightOf = [&combos](uint32_t cls) -> double {
    if (cls == 0) return 0.0;
    if (cls & kComboFlag) return combos[cls & ~kComboFlag];
    return 1.0 / static_cast<double>(cls);
  };

  // Non-empty buckets, highest scores first.
  std::vector<uint32_t> buckets;
  for (size_t b = kBuckets; b-- > 0;) {
    if (start[b + 1] > start[b]) buckets.push_back(static_cast<uint32_t>(b));
  }
  struct Totals {
    uint64_t neg = 0, pos = 0;
    double weight = 0;
  };
  std::vector<Totals> totals(buckets.size());
  parallelChunks(buckets.size(), 64, [&](size_t, size_t begin, size_t end) {
    control.throwIfCancelled();
    for (size_t i = begin; i < end; ++i) {
      Totals t;
      for (uint64_t r = start[buckets[i]]; r < start[buckets[i] + 1]; ++r) {
        const uint32_t cls = rec[r].cls;
        if (cls == 0) {
          ++t.neg;
        } else {
          ++t.pos;
          t.weight += weightOf(cls);
        }
      }
      totals[i] = t;
    }
  });
  std::vector<SweepStart> starts(buckets.size());
  SweepStart running;
  for (size_t i = 0; i < buckets.size(); ++i) {
    starts[i] = running;
    running.neg += totals[i].neg;
    running.pos += totals[i].pos;
    running.weight += totals[i].weight;
  }
  const uint64_t totalNeg = running.neg, totalPos = running.pos;
  const double units = static_cast<double>(units_);
  control.report(2, 3);

  // Per-bucket sweeps. Buckets below 2^16 records are sorted by the low 16 key bits with a stable two-pass LSD radix
  // sort (tiny ones with a comparison sort); larger ones (where walking a 2^16-entry table costs at most one step
  // per record) aggregate by the low 16 bits in a direct table. Either way ties keep the partition's order, so the
  // weight sums are deterministic.
  constexpr size_t kTableMin = kBuckets;
  constexpr size_t kRadixMin = 64;
  std::vector<std::unique_ptr<Sweep>> sweeps(buckets.size());
  parallelChunks(buckets.size(), 1, [&](size_t, size_t i, size_t) {
    control.throwIfCancelled();
    auto sweep = std::make_unique<Sweep>(totalNeg, totalPos, units, limits, starts[i]);
    PixelRecord* first = rec + start[buckets[i]];
    PixelRecord* last = rec + start[buckets[i] + 1];
    const size_t size = static_cast<size_t>(last - first);
    if (size < kTableMin) {
      if (size < kRadixMin) {
        std::stable_sort(first, last, [](const PixelRecord& a, const PixelRecord& b) { return a.key < b.key; });
      } else {
        std::vector<PixelRecord> temp(size);
        for (int shift = 0; shift < 16; shift += 8) {
          size_t count[257] = {0};
          for (const PixelRecord* r = first; r < last; ++r) count[((r->key >> shift) & 0xffu) + 1]++;
          for (int d = 0; d < 256; ++d) count[d + 1] += count[d];
          for (const PixelRecord* r = first; r < last; ++r) temp[count[(r->key >> shift) & 0xffu]++] = *r;
          std::copy(temp.begin(), temp.end(), first);
        }
      }
      // Ascending now: walk from the end for descending scores.
      for (PixelRecord* r = last; r > first;) {
        const uint32_t key = (r - 1)->key;
        uint64_t dNeg = 0, dPos = 0;
        double dWeight = 0;
        for (; r > first && (r - 1)->key == key; --r) {
          const uint32_t cls = (r - 1)->cls;
          if (cls == 0) {
            ++dNeg;
          } else {
            ++dPos;
            dWeight += weightOf(cls);
          }
        }
        sweep->group(dNeg, dPos, dWeight);
      }
    } else {
      std::vector<uint32_t> negs(kBuckets, 0), poss(kBuckets, 0);
      std::vector<double> weights(kBuckets, 0.0);
      for (PixelRecord* r = first; r < last; ++r) {
        const uint32_t low = r->key & 0xffffu;
        if (r->cls == 0) {
          ++negs[low];
        } else {
          ++poss[low];
          weights[low] += weightOf(r->cls);
        }
      }
      for (size_t low = kBuckets; low-- > 0;) {
        if (negs[low] != 0 || poss[low] != 0) sweep->group(negs[low], poss[low], weights[low]);
      }
    }
    sweeps[i] = std::move(sweep);
  });

  unsigned __int128 roc2 = 0;
  double apSum = 0, f1Max = 0;
  uint64_t groups = 0;
  std::vector<double> area(limits.size(), 0.0), correction(limits.size(), 0.0);
  for (const auto& s : sweeps) {
    roc2 += s->roc2;
    apSum += s->ap;
    f1Max = std::max(f1Max, s->f1Max);
    groups += s->groups;
    for (size_t l = 0; l < limits.size(); ++l) {
      area[l] += s->area[l];
      correction[l] += s->correction[l];
    }
  }
  control.report(3, 3);

  PixelMetrics out;
  out.binary = finishBinary(roc2, apSum, f1Max, totalNeg, totalPos, groups);
  out.units = units_;
  out.areaUnderPro.resize(limits.size());
  for (size_t l = 0; l < limits.size(); ++l) {
    out.areaUnderPro[l] = (units_ > 0 && totalNeg > 0) ? (area[l] + correction[l]) / limits[l] : kNaN;
  }
  return out;
}

}  // namespace imiad
