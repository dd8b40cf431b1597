// 8-connected component labelling (see components.h): the classic two-pass algorithm. The first pass gives each
// foreground pixel the smallest provisional label among its already-visited neighbours (west, north-west, north,
// north-east) and records equivalences in a union-find forest; the second pass replaces each provisional label by
// its root and renumbers roots in order of first appearance, which is raster order of the components' first pixels.
#include "components.h"

#include <vector>

namespace imiad {
namespace {

// Union-find over provisional labels; parent[i] <= i always holds, so roots are the smallest label of a set and
// path halving keeps finds short.
struct Forest {
  std::vector<uint32_t> parent;

  uint32_t make() {
    const uint32_t id = static_cast<uint32_t>(parent.size());
    parent.push_back(id);
    return id;
  }
  uint32_t find(uint32_t x) {
    while (parent[x] != x) {
      parent[x] = parent[parent[x]];
      x = parent[x];
    }
    return x;
  }
  uint32_t unite(uint32_t a, uint32_t b) {
    a = find(a);
    b = find(b);
    if (a == b) return a;
    if (a < b) {
      parent[b] = a;
      return a;
    }
    parent[a] = b;
    return b;
  }
};

}  // namespace

uint32_t labelComponents(const uint8_t* mask, uint32_t width, uint32_t height, uint32_t* labels) {
  const size_t w = width;
  const size_t n = w * height;
  if (n == 0) return 0;
  Forest forest;
  forest.parent.reserve(64);
  forest.make();  // label 0 = background
  for (size_t y = 0; y < height; ++y) {
    const uint8_t* row = mask + y * w;
    uint32_t* out = labels + y * w;
    const uint32_t* above = y > 0 ? labels + (y - 1) * w : nullptr;
    for (size_t x = 0; x < w; ++x) {
      if (row[x] == 0) {
        out[x] = 0;
        continue;
      }
      uint32_t label = 0;
      auto consider = [&](uint32_t neighbour) {
        if (neighbour == 0) return;
        label = label == 0 ? forest.find(neighbour) : forest.unite(label, neighbour);
      };
      if (x > 0) consider(out[x - 1]);
      if (above != nullptr) {
        if (x > 0) consider(above[x - 1]);
        consider(above[x]);
        if (x + 1 < w) consider(above[x + 1]);
      }
      out[x] = label == 0 ? forest.make() : label;
    }
  }
  // Renumber roots in order of first appearance.
  std::vector<uint32_t> final(forest.parent.size(), 0);
  uint32_t count = 0;
  for (size_t i = 0; i < n; ++i) {
    const uint32_t l = labels[i];
    if (l == 0) continue;
    const uint32_t root = forest.find(l);
    if (final[root] == 0) final[root] = ++count;
    labels[i] = final[root];
  }
  return count;
}

}  // namespace imiad
