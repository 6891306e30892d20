// Which level's kernels run (capability.h): the CPU's features from CPUID and XGETBV, the levels
// setup.py built (FCN_CPU_BUILT_<LEVEL>), and FCNFAST_CPU_CAPABILITY. Built for the baseline.
#include "cpu/capability.h"

#include <algorithm>
#include <cctype>

#include "cpu/amx_matmul.h"
#include "cpu/winograd_bf16.h"

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define FCN_X86 1
#endif

namespace fcn {

// The tables of the levels built (kernel_table.cpp, once per level).
extern const CpuKernels kernels_cpu_default;
#if defined(FCN_CPU_BUILT_AVX2)
extern const CpuKernels kernels_cpu_avx2;
#endif
#if defined(FCN_CPU_BUILT_AVX512)
extern const CpuKernels kernels_cpu_avx512;
#endif
#if defined(FCN_CPU_BUILT_MARCH)
extern const CpuKernels kernels_cpu_march;
#endif

namespace {

// The names FCNFAST_CPU_CAPABILITY knows, lowest first; "march=..." ranks above them all.
const char* const kLevelNames[] = {"default", "avx2", "avx512"};

struct FeatureName {
  CpuFeature bit;
  const char* name;
};
const FeatureName kFeatureNames[] = {
    {kSSE3, "sse3"}, {kSSSE3, "ssse3"}, {kSSE41, "sse4.1"}, {kSSE42, "sse4.2"},
    {kPOPCNT, "popcnt"}, {kAVX, "avx"}, {kAVX2, "avx2"}, {kFMA, "fma"}, {kF16C, "f16c"},
    {kBMI1, "bmi"}, {kBMI2, "bmi2"}, {kLZCNT, "lzcnt"}, {kMOVBE, "movbe"},
    {kAVX512F, "avx512f"}, {kAVX512CD, "avx512cd"}, {kAVX512BW, "avx512bw"},
    {kAVX512DQ, "avx512dq"}, {kAVX512VL, "avx512vl"}, {kAVX512IFMA, "avx512ifma"},
    {kAVX512VBMI, "avx512vbmi"}, {kAVX512VBMI2, "avx512vbmi2"}, {kAVX512VNNI, "avx512vnni"},
    {kAVX512BITALG, "avx512bitalg"}, {kAVX512VPOPCNTDQ, "avx512vpopcntdq"},
    {kAVX512BF16, "avx512bf16"}, {kAVX512FP16, "avx512fp16"}, {kGFNI, "gfni"},
    {kVAES, "vaes"}, {kVPCLMULQDQ, "vpclmulqdq"}, {kAVXVNNI, "avxvnni"},
};

#if defined(FCN_X86)
uint64_t xgetbv0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

// CPUID's feature bits, each AVX feature only where the OS saves the registers it needs
// (XCR0: SSE and AVX state for AVX; opmask and the upper ZMM state as well for AVX-512).
uint64_t detect_features() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
  auto bit = [](unsigned reg, int i) { return ((reg >> i) & 1u) != 0; };
  const unsigned c1 = c;
  const uint64_t xcr0 = bit(c1, 27) ? xgetbv0() : 0;  // OSXSAVE
  const bool os_avx = (xcr0 & 0x6) == 0x6;
  const bool os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0;
  uint64_t f = 0;
  auto set = [&f](bool on, CpuFeature feature) {
    if (on) f |= feature;
  };
  set(bit(c1, 0), kSSE3);
  set(bit(c1, 9), kSSSE3);
  set(bit(c1, 19), kSSE41);
  set(bit(c1, 20), kSSE42);
  set(bit(c1, 22), kMOVBE);
  set(bit(c1, 23), kPOPCNT);
  set(os_avx && bit(c1, 28), kAVX);
  set(os_avx && bit(c1, 12), kFMA);
  set(os_avx && bit(c1, 29), kF16C);
  if (__get_cpuid_max(0, nullptr) >= 7) {
    __cpuid_count(7, 0, a, b, c, d);
    const unsigned max_sub = a;
    set(bit(b, 3), kBMI1);
    set(bit(b, 8), kBMI2);
    set(os_avx && bit(b, 5), kAVX2);
    set(os_avx512 && bit(b, 16), kAVX512F);
    set(os_avx512 && bit(b, 17), kAVX512DQ);
    set(os_avx512 && bit(b, 21), kAVX512IFMA);
    set(os_avx512 && bit(b, 28), kAVX512CD);
    set(os_avx512 && bit(b, 30), kAVX512BW);
    set(os_avx512 && bit(b, 31), kAVX512VL);
    set(os_avx512 && bit(c, 1), kAVX512VBMI);
    set(os_avx512 && bit(c, 6), kAVX512VBMI2);
    set(bit(c, 8), kGFNI);
    set(os_avx && bit(c, 9), kVAES);
    set(os_avx && bit(c, 10), kVPCLMULQDQ);
    set(os_avx512 && bit(c, 11), kAVX512VNNI);
    set(os_avx512 && bit(c, 12), kAVX512BITALG);
    set(os_avx512 && bit(c, 14), kAVX512VPOPCNTDQ);
    set(os_avx512 && bit(d, 23), kAVX512FP16);
    if (max_sub >= 1) {
      __cpuid_count(7, 1, a, b, c, d);
      set(os_avx && bit(a, 4), kAVXVNNI);
      set(os_avx512 && bit(a, 5), kAVX512BF16);
    }
  }
  if (__get_cpuid(0x80000001u, &a, &b, &c, &d)) set(bit(c, 5), kLZCNT);
  return f;
}
#else
uint64_t detect_features() { return 0; }  // non-x86: only the baseline level is built
#endif

uint64_t cpu_features() {
  static const uint64_t features = detect_features();
  return features;
}

std::string missing_features(const CpuKernels& level) {
  std::string out;
  for (const FeatureName& f : kFeatureNames)
    if ((level.features & f.bit) && !(cpu_features() & f.bit))
      out += (out.empty() ? "" : ", ") + std::string(f.name);
  return out;
}

// Rank of a level name: its index in kLevelNames, above them all for "march=...", -1 unknown.
int rank_of(const std::string& name) {
  for (int i = 0; i < static_cast<int>(sizeof(kLevelNames) / sizeof(kLevelNames[0])); ++i)
    if (name == kLevelNames[i]) return i;
  if (name.rfind("march=", 0) == 0) return 1000;
  return -1;
}

std::string names(const std::vector<const CpuKernels*>& levels) {
  std::string out;
  for (const CpuKernels* l : levels) out += (out.empty() ? "" : ", ") + std::string(l->name);
  return out;
}

const CpuKernels* g_chosen = &kernels_cpu_default;

}  // namespace

std::vector<const CpuKernels*> cpu_levels_built() {
  std::vector<const CpuKernels*> v{&kernels_cpu_default};
#if defined(FCN_CPU_BUILT_AVX2)
  v.push_back(&kernels_cpu_avx2);
#endif
#if defined(FCN_CPU_BUILT_AVX512)
  v.push_back(&kernels_cpu_avx512);
#endif
#if defined(FCN_CPU_BUILT_MARCH)
  v.push_back(&kernels_cpu_march);
#endif
  return v;
}

bool cpu_supports(const CpuKernels& level) { return (level.features & ~cpu_features()) == 0; }

std::vector<std::string> cpu_feature_names() {
  std::vector<std::string> out;
  for (const FeatureName& f : kFeatureNames)
    if (cpu_features() & f.bit) out.emplace_back(f.name);
  return out;
}

const CpuKernels& cpu_kernels() { return *g_chosen; }

namespace {

constexpr int kTopRank = 1 << 20;

// The best supported level of rank <= max_rank (the baseline is always supported: no features).
const CpuKernels* best_up_to(int max_rank) {
  const std::vector<const CpuKernels*> built = cpu_levels_built();
  const CpuKernels* pick = built.front();
  for (const CpuKernels* l : built)
    if (cpu_supports(*l) && rank_of(l->name) <= max_rank) pick = l;
  return pick;
}

}  // namespace

std::string choose_cpu_kernels(const char* request) {
  const std::vector<const CpuKernels*> built = cpu_levels_built();
  const int top = kTopRank;
  std::string req = request ? request : "";
  req.erase(std::remove_if(req.begin(), req.end(), [](unsigned char ch) { return std::isspace(ch); }),
            req.end());
  std::transform(req.begin(), req.end(), req.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  if (req.empty()) {
    g_chosen = best_up_to(top);
    return "";
  }
  const std::string head = "FCNFAST_CPU_CAPABILITY=" + req + ": ";
  for (const CpuKernels* l : built) {
    if (req != l->name) continue;
    if (cpu_supports(*l)) {
      g_chosen = l;
      return "";
    }
    g_chosen = best_up_to(rank_of(l->name));
    return head + "this CPU lacks " + missing_features(*l) + "; using " + g_chosen->name;
  }
  const int rank = rank_of(req);
  g_chosen = best_up_to(rank < 0 ? top : rank);
  if (rank < 0)
    return head + "unknown level (this module has: " + names(built) + "); using " + g_chosen->name;
  return head + "not built into this module (it has: " + names(built) + "); using " +
         g_chosen->name;
}

namespace {

// The highest built level this CPU supports: the kernels built apart from the levels (AMX, AVX-512
// BF16) run only while it is the chosen one, since a lower level asked for (FCNFAST_CPU_CAPABILITY,
// to run as a smaller CPU would) rules them out.
// (Found at the first call, not at load: the levels' tables are other objects' statics.)
const CpuKernels* best_level() {
  static const CpuKernels* const best = best_up_to(kTopRank);
  return best;
}

std::string lowered_level() {
  return std::string("FCNFAST_CPU_CAPABILITY chose ") + g_chosen->name + ", below this CPU's " +
         best_level()->name;
}

}  // namespace

#if defined(FCN_CPU_BUILT_AMX)
extern const AmxKernels kernels_amx;  // cpu/amx_matmul.cpp

namespace {

// Why the AMX kernels cannot run here ("" when they can).
std::string amx_missing() {
#if defined(FCN_X86) && defined(__linux__)
  unsigned a, b, c, d;
  if (__get_cpuid_max(0, nullptr) < 7) return "this CPU has no AMX";
  __cpuid_count(7, 0, a, b, c, d);
  if (!((d >> 24) & 1u) || !((d >> 22) & 1u)) return "this CPU has no AMX-BF16";
  const uint64_t need = kAVX512F | kAVX512BW | kAVX512VL | kAVX512BF16;
  if ((cpu_features() & need) != need) return "this CPU (or its OS) lacks AVX-512 BF16";
  if ((xgetbv0() & (3ull << 17)) != (3ull << 17)) return "the OS does not enable the AMX tile state";
  // Linux hands the tile state out per process on request (arch_prctl ARCH_REQ_XCOMP_PERM for
  // XFEATURE_XTILEDATA, since 5.16); a tile instruction without it is SIGILL.
  if (syscall(SYS_arch_prctl, 0x1023, 18) != 0) return "Linux refused the AMX tile state";
  return "";
#else
  return "AMX is used on x86-64 Linux only";
#endif
}

}  // namespace

const AmxKernels* amx_kernels(std::string* why) {
  static const std::string missing = amx_missing();
  if (missing.empty() && g_chosen == best_level()) return &kernels_amx;  // every call asks: no strings
  if (why) *why = !missing.empty() ? missing : lowered_level();
  return nullptr;
}
#else
const AmxKernels* amx_kernels(std::string* why) {
  if (why) *why = "fcnfast._C was built without the AMX kernels (the compiler lacks -mamx-tile)";
  return nullptr;
}
#endif

#if defined(FCN_CPU_BUILT_BF16)
extern const WinogradBf16Kernels kernels_winograd_bf16;  // cpu/winograd_bf16.cpp

const WinogradBf16Kernels* winograd_bf16_kernels(std::string* why) {
  const uint64_t need = kAVX512F | kAVX512BW | kAVX512VL | kAVX512BF16;
  const bool has = (cpu_features() & need) == need;
  if (has && g_chosen == best_level()) return &kernels_winograd_bf16;
  if (why) *why = !has ? "this CPU (or its OS) lacks AVX-512 BF16" : lowered_level();
  return nullptr;
}
#else
const WinogradBf16Kernels* winograd_bf16_kernels(std::string* why) {
  if (why) *why = "fcnfast._C was built without the AVX-512 BF16 kernels (the compiler lacks -mavx512bf16)";
  return nullptr;
}
#endif

}  // namespace fcn
