// The thread team of native/parallel.h: every chunk runs exactly once whatever the team's size and assignment,
// exceptions reach the caller and leave the team usable, members that fell asleep wake up, and a team whose
// members keep the caller waiting hands the work to the caller alone. Run by test/native/run.sh under ASan/UBSan.
#include <atomic>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "parallel.h"

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  if (!ok) {
    std::fprintf(stderr, "FAIL: %s\n", what.c_str());
    ++failures;
  }
}

void everyChunkOnce() {
  for (unsigned size : {1u, 2u, 3u, 5u}) {
    imiad::Team team(size);
    for (bool balance : {false, true}) {
      for (size_t n : {size_t(1), size_t(7), size_t(1000), size_t(1001)}) {
        const size_t chunk = 64;
        std::vector<std::atomic<int>> seen((n + chunk - 1) / chunk);
        std::vector<size_t> begins(seen.size()), ends(seen.size());
        team.run(n, chunk, [&](size_t k, size_t begin, size_t end) {
          seen[k]++;
          begins[k] = begin;
          ends[k] = end;
        }, balance);
        bool ok = true;
        for (size_t k = 0; k < seen.size(); ++k) {
          ok = ok && seen[k] == 1 && begins[k] == k * chunk && ends[k] == std::min(n, k * chunk + chunk);
        }
        check(ok, "size " + std::to_string(size) + (balance ? " balanced" : " fixed") + " n " + std::to_string(n) +
                      ": every chunk once, with its bounds");
      }
    }
  }
}

void fixedOwners() {
  // Without balance, chunk k runs on member k % size: the same thread for the same chunk, run after run.
  imiad::Team team(2);
  std::vector<std::thread::id> first(8), again(8);
  team.run(8, 1, [&](size_t k, size_t, size_t) { first[k] = std::this_thread::get_id(); });
  team.run(8, 1, [&](size_t k, size_t, size_t) { again[k] = std::this_thread::get_id(); });
  bool same = true, split = false;
  for (size_t k = 0; k < 8; ++k) {
    same = same && first[k] == again[k] && first[k] == first[k % 2];
    split = split || first[k] != first[0];
  }
  check(same && split, "fixed owners: chunk k on member k % 2, the same in every run");
}

void errors() {
  imiad::Team team(3);
  std::string message;
  try {
    team.run(100, 1, [&](size_t k, size_t, size_t) {
      if (k == 41) throw std::runtime_error("chunk 41 failed");
    });
  } catch (const std::runtime_error& e) {
    message = e.what();
  }
  check(message == "chunk 41 failed", "an exception in a chunk reaches the caller: " + message);
  std::atomic<size_t> sum{0};
  team.run(100, 1, [&](size_t k, size_t, size_t) { sum += k; });
  check(sum == 4950, "the team is usable after an exception");
}

void sleepers() {
  // Members sleep after about 1 ms without work; runs after longer pauses must still complete.
  imiad::Team team(2);
  std::atomic<size_t> count{0};
  for (int r = 0; r < 5; ++r) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    team.run(10, 1, [&](size_t, size_t, size_t) { count++; });
  }
  for (int r = 0; r < 20000; ++r) team.run(4, 1, [&](size_t, size_t, size_t) { count++; });
  check(count == 50 + 80000, "many short runs and runs after sleeping all complete");
}

void soloWhenMembersLag() {
  // A member that always lags (here: its chunks sleep) keeps the caller waiting; the team then runs passes on the
  // caller alone for a while. The result is the same either way.
  imiad::Team team(2);
  const std::thread::id caller = std::this_thread::get_id();
  size_t soloRuns = 0;
  for (int r = 0; r < 200; ++r) {
    std::atomic<int> onCaller{0};
    team.run(2, 1, [&](size_t k, size_t, size_t) {
      if (std::this_thread::get_id() == caller) {
        onCaller++;
      } else if (k == 1) {
        std::this_thread::sleep_for(std::chrono::microseconds(300));
      }
    });
    if (onCaller == 2) ++soloRuns;
  }
  check(soloRuns > 50, "passes move to the caller when the members lag (" + std::to_string(soloRuns) + " of 200)");
}

// WorkGate: a one-thread team never gets a pass; the gate first measures passes alone, then follows the cost model
// (alone: rate * work; team: rate * work / size + the team's hand-off); run() covers every chunk once whichever it
// picks. The team measures its hand-off on every run (here set by noteHandOff).
void workGate() {
  {
    imiad::Team one(1);
    imiad::WorkGate gate(one);
    bool any = false;
    for (int i = 0; i < 20; ++i) any = any || gate.chooseTeam(1e9);
    check(!any, "work gate: a team of one never runs a pass");
  }
  imiad::Team team(2);
  imiad::WorkGate gate(team);
  // Four passes alone at 1 ns per unit; then, the hand-off never measured, the team.
  int alone = 0;
  for (int i = 0; i < 4; ++i) {
    alone += gate.chooseTeam(1000) ? 0 : 1;
    gate.recordAlone(1000, 1e-6);
  }
  check(alone == 4 && gate.chooseTeam(1000), "work gate: learns alone first (" + std::to_string(alone) +
                                                 " of 4), then tries the team");
  for (int i = 0; i < 4; ++i) team.noteHandOff(10e-6);
  check(std::abs(gate.rate() - 1e-9) < 1e-15 && std::abs(team.handOff() - 10e-6) < 1e-12 && team.handOffSamples() == 4,
        "work gate: rate 1 ns per unit and hand-off 10 us learnt (" + std::to_string(gate.rate()) + ", " +
            std::to_string(team.handOff()) + ")");
  // Break-even: 1e-9 * work / 2 = 1e-5, work = 20,000 units. Far from it (outside the exploration range), the model
  // decides every pass.
  bool big = true, small = false;
  for (int i = 0; i < 100; ++i) {
    big = big && gate.chooseTeam(2e7);
    small = small || gate.chooseTeam(500);
  }
  check(big && !small, "work gate: the team for 20,000,000 units, alone for 500");
  // Near break-even, the other choice now and then.
  int teamNear = 0;
  for (int i = 0; i < 320; ++i) teamNear += gate.chooseTeam(1e5) ? 1 : 0;
  check(teamNear > 280 && teamNear < 320, "work gate: near break-even, mostly the team with some passes alone (" +
                                              std::to_string(teamNear) + " of 320)");
  // A run on the team measures the hand-off.
  const uint64_t before = team.handOffSamples();
  team.run(8, 1, [](size_t, size_t, size_t) {});
  check(team.handOffSamples() == before + 1 && team.handOff() >= 0.0, "team: every run on the team measures its hand-off");
  // run(): every chunk once, alone or on the team.
  for (double work : {1.0, 1e9}) {
    std::vector<std::atomic<int>> seen(10);
    gate.run(work, 1000, 100, [&](size_t k, size_t begin, size_t end) {
      if (begin == k * 100 && end == begin + 100) seen[k]++;
    });
    bool ok = true;
    for (auto& v : seen) ok = ok && v == 1;
    check(ok, "work gate: run() covers every chunk once for work " + std::to_string(work));
  }
}

}  // namespace

int main() {
  everyChunkOnce();
  fixedOwners();
  errors();
  sleepers();
  soloWhenMembersLag();
  workGate();
  if (failures == 0) std::printf("test_parallel: all checks passed\n");
  return failures == 0 ? 0 : 1;
}
