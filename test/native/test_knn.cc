// The k-NN kernels against the plain reference loop: every micro-kernel this CPU runs, random and hand-made inputs,
// ties, k = bank size, the error paths and thread-count independence. Run by test/native/run.sh under ASan/UBSan.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "control.h"
#include "knn.h"

using imiad::KnnFlatIndex;
using imiad::KnnIsa;

namespace {

int failures = 0;

#define CHECK(cond, ...)                                  \
  do {                                                    \
    if (!(cond)) {                                        \
      ++failures;                                         \
      std::fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      std::fprintf(stderr, __VA_ARGS__);                  \
      std::fprintf(stderr, "\n");                         \
    }                                                     \
  } while (0)

std::vector<KnnIsa> isasToTest() {
  std::vector<KnnIsa> out{KnnIsa::Portable};
  const KnnIsa best = imiad::knnBestIsa();
  if (best == KnnIsa::Avx512 || best == KnnIsa::Avx2) out.push_back(KnnIsa::Avx2);
  if (best == KnnIsa::Avx512) out.push_back(KnnIsa::Avx512);
  return out;
}

std::vector<float> randomMatrix(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> out(n);
  for (float& v : out) v = u(rng);
  return out;
}

struct Result {
  std::vector<int32_t> indices;
  std::vector<float> distances;
};

Result plain(const std::vector<float>& bank, const std::vector<float>& queries, size_t dims, size_t k) {
  const size_t rows = bank.size() / dims, nq = queries.size() / dims;
  Result r{std::vector<int32_t>(nq * k), std::vector<float>(nq * k)};
  imiad::knnSearchPlain(bank.data(), rows, queries.data(), nq, dims, k, r.indices.data(), r.distances.data(),
                        imiad::RunControl{});
  return r;
}

Result fast(const KnnFlatIndex& index, const std::vector<float>& queries, size_t k) {
  const size_t nq = queries.size() / index.dims();
  Result r{std::vector<int32_t>(nq * k), std::vector<float>(nq * k)};
  index.search(queries.data(), nq, k, r.indices.data(), r.distances.data(), imiad::RunControl{});
  return r;
}

bool same(const Result& a, const Result& b) {
  return a.indices == b.indices &&
         std::memcmp(a.distances.data(), b.distances.data(), a.distances.size() * sizeof(float)) == 0;
}

void compareShape(size_t rows, size_t dims, size_t nq, const std::vector<size_t>& ks, uint32_t seed) {
  const std::vector<float> bank = randomMatrix(rows * dims, seed);
  const std::vector<float> queries = randomMatrix(nq * dims, seed + 1);
  for (KnnIsa isa : isasToTest()) {
    KnnFlatIndex index(bank.data(), rows, dims, isa);
    for (size_t k : ks) {
      if (k > rows) continue;
      const Result want = plain(bank, queries, dims, k);
      const Result got = fast(index, queries, k);
      CHECK(same(want, got), "random rows=%zu dims=%zu nq=%zu k=%zu isa=%s", rows, dims, nq, k,
            imiad::knnIsaName(isa));
    }
  }
}

void testRandomShapes() {
  compareShape(1, 1, 1, {1}, 1);
  compareShape(31, 7, 13, {1, 2, 31}, 2);
  compareShape(33, 33, 25, {1, 9, 32, 33}, 3);
  compareShape(200, 16, 97, {1, 5, 64, 65, 150, 200}, 4);
  compareShape(8200, 8, 5, {1, 9, 100}, 5);      // crosses a bank slice
  compareShape(300, 64, 100, {1, 9, 300}, 6);     // crosses a query block
  compareShape(40, 3, 3100, {1, 5, 40}, 7);       // more than one search batch
}

void testTiesAndDuplicates() {
  // Each bank row appears three times; queries are bank rows themselves, so the zero distances tie.
  const size_t dims = 5, unique = 40, rows = unique * 3;
  const std::vector<float> base = randomMatrix(unique * dims, 11);
  std::vector<float> bank;
  for (size_t copy = 0; copy < 3; ++copy) bank.insert(bank.end(), base.begin(), base.end());
  std::vector<float> queries(base.begin(), base.begin() + 10 * dims);
  for (KnnIsa isa : isasToTest()) {
    KnnFlatIndex index(bank.data(), rows, dims, isa);
    for (size_t k : {size_t(1), size_t(2), size_t(3), size_t(7), rows}) {
      const Result got = fast(index, queries, k);
      CHECK(same(plain(bank, queries, dims, k), got), "duplicates k=%zu isa=%s", k, imiad::knnIsaName(isa));
      // Query q equals rows q, q + 40, q + 80: those come first, in index order, at distance 0.
      for (size_t q = 0; q < 10 && k >= 3; ++q) {
        CHECK(got.indices[q * k] == int32_t(q) && got.indices[q * k + 1] == int32_t(q + unique) &&
                  got.indices[q * k + 2] == int32_t(q + 2 * unique) && got.distances[q * k + 2] == 0.0f,
              "duplicate order q=%zu k=%zu", q, k);
      }
    }
  }
  // An all-equal bank: every row ties with every other, so the answer is 0, 1, ..., k - 1.
  std::vector<float> flat(50 * 3, 0.25f);
  std::vector<float> query{1.0f, 2.0f, 3.0f};
  for (KnnIsa isa : isasToTest()) {
    KnnFlatIndex index(flat.data(), 50, 3, isa);
    const Result got = fast(index, query, 50);
    for (int32_t j = 0; j < 50; ++j) CHECK(got.indices[j] == j, "all-equal bank j=%d isa=%s", j, imiad::knnIsaName(isa));
  }
}

void testHandMade() {
  // Points on a line: 0, 1, 2, 3, 10. Query 1.5 is equidistant from 1 and 2 (the smaller index first), then 0 and 3.
  const std::vector<float> bank{0, 1, 2, 3, 10};
  const std::vector<float> queries{1.5f, 9.0f, -4.0f};
  for (KnnIsa isa : isasToTest()) {
    KnnFlatIndex index(bank.data(), 5, 1, isa);
    const Result r = fast(index, queries, 4);
    const std::vector<int32_t> want{1, 2, 0, 3, 4, 3, 2, 1, 0, 1, 2, 3};
    const std::vector<float> wantD{0.5f, 0.5f, 1.5f, 1.5f, 1, 6, 7, 8, 4, 5, 6, 7};
    CHECK(r.indices == want, "line indices isa=%s", imiad::knnIsaName(isa));
    CHECK(r.distances == wantD, "line distances isa=%s", imiad::knnIsaName(isa));
  }
  // 3-4-5 triangle: distance from (0, 0) to (3, 4) is exactly 5.
  const std::vector<float> bank2{3, 4, 6, 8, 0, 1};
  const std::vector<float> q2{0, 0};
  KnnFlatIndex index2(bank2.data(), 3, 2);
  const Result r2 = fast(index2, q2, 3);
  CHECK((r2.indices == std::vector<int32_t>{2, 0, 1}), "triangle indices");
  CHECK((r2.distances == std::vector<float>{1, 5, 10}), "triangle distances");
}

void testNearTies() {
  // Rows that differ from each other by one ulp in one coordinate, far from the origin: the norm formula cannot
  // order them, the exact re-ranking must.
  const size_t dims = 64, rows = 96;
  std::vector<float> bank(rows * dims);
  const std::vector<float> base = randomMatrix(dims, 21, 50.0f);
  for (size_t r = 0; r < rows; ++r) {
    for (size_t d = 0; d < dims; ++d) bank[r * dims + d] = base[d];
    float& v = bank[r * dims + (r % dims)];
    for (size_t step = 0; step < r % 3; ++step) v = std::nextafter(v, 1e9f);
  }
  std::vector<float> queries = randomMatrix(4 * dims, 22, 0.01f);
  for (size_t i = 0; i < queries.size(); ++i) queries[i] += base[i % dims];
  for (KnnIsa isa : isasToTest()) {
    KnnFlatIndex index(bank.data(), rows, dims, isa);
    for (size_t k : {size_t(1), size_t(5), size_t(50), rows}) {
      CHECK(same(plain(bank, queries, dims, k), fast(index, queries, k)), "near ties k=%zu isa=%s", k,
            imiad::knnIsaName(isa));
    }
  }
}

void testHugeValuesFallBack() {
  // Squared norms beyond float range: the index takes the exact plain path and still agrees.
  const size_t dims = 4, rows = 20;
  std::vector<float> bank = randomMatrix(rows * dims, 31, 1e19f);
  std::vector<float> queries = randomMatrix(3 * dims, 32, 1e19f);
  KnnFlatIndex index(bank.data(), rows, dims);
  CHECK(same(plain(bank, queries, dims, 4), fast(index, queries, 4)), "huge values");
}

template <typename Fn>
std::string errorOf(Fn fn, std::string* code = nullptr) {
  try {
    fn();
  } catch (const imiad::InvalidArgument& e) {
    if (code) *code = e.code;
    return e.what();
  } catch (const imiad::Cancelled& e) {
    if (code) *code = "ABORT_ERR";
    return e.what();
  }
  return "";
}

void testErrors() {
  std::vector<float> bank = randomMatrix(10 * 3, 41);
  std::vector<float> queries = randomMatrix(2 * 3, 42);
  std::vector<int32_t> idx(2 * 11);
  std::vector<float> dist(2 * 11);
  KnnFlatIndex index(bank.data(), 10, 3);
  std::string code;
  CHECK(errorOf([&] { index.search(queries.data(), 2, 0, idx.data(), dist.data(), imiad::RunControl{}); }, &code) ==
            "Expected integer between 1 and 10 for k but received 0 of type number" && code == "ERR_IMIAD_RANGE",
        "k = 0");
  CHECK(errorOf([&] { index.search(queries.data(), 2, 11, idx.data(), dist.data(), imiad::RunControl{}); }) ==
            "Expected integer between 1 and 10 for k but received 11 of type number",
        "k > rows");
  queries[4] = NAN;
  CHECK(errorOf([&] { index.search(queries.data(), 2, 1, idx.data(), dist.data(), imiad::RunControl{}); }, &code) ==
            "Expected finite numbers in queries but received NaN of type number at index 4" &&
            code == "ERR_IMIAD_NOT_FINITE",
        "NaN query");
  queries[4] = 0;
  bank[7] = -INFINITY;
  KnnFlatIndex bad(bank.data(), 10, 3);
  CHECK(errorOf([&] { bad.search(queries.data(), 2, 1, idx.data(), dist.data(), imiad::RunControl{}); }) ==
            "Expected finite numbers in bank but received -Infinity of type number at index 7",
        "infinite bank");
  CHECK(errorOf([&] { imiad::knnSearchPlain(bank.data(), 10, queries.data(), 2, 3, 1, idx.data(), dist.data(),
                                            imiad::RunControl{}); }) ==
            "Expected finite numbers in bank but received -Infinity of type number at index 7",
        "infinite bank (plain)");
  CHECK(errorOf([&] { KnnFlatIndex empty(bank.data(), 0, 3); }, &code) == "Expected at least 1 row(s) in bank" &&
            code == "ERR_IMIAD_EMPTY",
        "empty bank");
  bank[7] = 0;
  int32_t flag = 1;
  imiad::RunControl cancelled;
  cancelled.cancelFlag = &flag;
  KnnFlatIndex fresh(bank.data(), 10, 3);
  CHECK(errorOf([&] { fresh.search(queries.data(), 2, 1, idx.data(), dist.data(), cancelled); }, &code) ==
            "The operation was aborted" && code == "ABORT_ERR",
        "cancel");
  // After a cancelled first search (which also cancelled the packing) the index still works.
  CHECK(same(plain(bank, queries, 3, 2), fast(fresh, queries, 2)), "search after cancel");
}

void testThreadCountIndependence() {
  const size_t dims = 24, rows = 9000, nq = 40;
  const std::vector<float> bank = randomMatrix(rows * dims, 51);
  const std::vector<float> queries = randomMatrix(nq * dims, 52);
  std::vector<Result> results;
  for (const char* threads : {"1", "2", "5"}) {
    setenv("IMIAD_THREADS", threads, 1);
    KnnFlatIndex index(bank.data(), rows, dims);
    results.push_back(fast(index, queries, 7));
  }
  unsetenv("IMIAD_THREADS");
  CHECK(same(results[0], results[1]) && same(results[0], results[2]), "thread count changes the result");
}

}  // namespace

int main() {
  testRandomShapes();
  testTiesAndDuplicates();
  testHandMade();
  testNearTies();
  testHugeValuesFallBack();
  testErrors();
  testThreadCountIndependence();
  if (failures != 0) {
    std::fprintf(stderr, "test_knn: %d failure(s)\n", failures);
    return 1;
  }
  std::printf("test_knn: all passed (kernels:");
  for (KnnIsa isa : isasToTest()) std::printf(" %s", imiad::knnIsaName(isa));
  std::printf(")\n");
  return 0;
}
