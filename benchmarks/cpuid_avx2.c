/* An AVX2-only x86-64 CPU, as every library in a process sees it: LD_PRELOAD this (the benchmark
 * scripts' --as-avx2 builds and loads it) and the CPUID instruction reports no AVX-512, AVX10, AMX,
 * AVX-VNNI or native bfloat16, so oneDNN (torch's and OpenVINO's), onnxruntime's MLAS, ATen,
 * inductor and fcnfast's own dispatch all pick the kernels they would pick on such a CPU.
 *
 * Linux's CPUID faulting (arch_prctl ARCH_SET_CPUID, the cpu flag `cpuid_fault`) makes CPUID trap
 * with SIGSEGV in this thread and every thread it starts; the handler runs the real CPUID, clears
 * the bits and steps over the instruction. What it cannot hide: XGETBV still shows the OS saving the
 * AVX-512 state (every library checks the CPUID bits too) and glibc chose its string functions at
 * start-up, before this runs. The microarchitecture (caches, clock, FMA ports) stays this CPU's.
 * A program that installs its own SIGSEGV handler (gcc's cc1plus, for its crash reports; inductor
 * runs it) gets it chained behind ours: ours stays, and passes it the faults that are not CPUID.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#define ARCH_SET_CPUID 0x1012
#define BIT(n) (1u << (n))

/* leaf 7 subleaf 0, EBX: AVX512F, DQ, IFMA, PF, ER, CD, BW, VL */
static const uint32_t L7_EBX = BIT(16) | BIT(17) | BIT(21) | BIT(26) | BIT(27) | BIT(28) | BIT(30) | BIT(31);
/* ECX: AVX512_VBMI, VBMI2, VNNI, BITALG, VPOPCNTDQ */
static const uint32_t L7_ECX = BIT(1) | BIT(6) | BIT(11) | BIT(12) | BIT(14);
/* EDX: AVX512_4VNNIW, 4FMAPS, VP2INTERSECT, AMX-BF16, AVX512_FP16, AMX-TILE, AMX-INT8 */
static const uint32_t L7_EDX = BIT(2) | BIT(3) | BIT(8) | BIT(22) | BIT(23) | BIT(24) | BIT(25);
/* leaf 7 subleaf 1, EAX: AVX-VNNI, AVX512_BF16, AMX-FP16, AVX-IFMA; EDX: AVX-VNNI-INT8,
 * AVX-NE-CONVERT, AMX-COMPLEX, AVX10 */
static const uint32_t L71_EAX = BIT(4) | BIT(5) | BIT(21) | BIT(23);
static const uint32_t L71_EDX = BIT(4) | BIT(5) | BIT(8) | BIT(19);

static void hide(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
    if (leaf == 7 && sub == 0) {
        r[1] &= ~L7_EBX;
        r[2] &= ~L7_ECX;
        r[3] &= ~L7_EDX;
    } else if (leaf == 7 && sub == 1) {
        r[0] &= ~L71_EAX;
        r[3] &= ~L71_EDX;
    } else if (leaf == 0xD && sub == 0) {
        r[0] &= ~(BIT(5) | BIT(6) | BIT(7) | BIT(17) | BIT(18)); /* opmask, ZMM, AMX tile state */
    } else if (leaf == 0x1D || leaf == 0x1E || leaf == 0x24) {  /* AMX tile info, AVX10 */
        r[0] = r[1] = r[2] = r[3] = 0;
    }
}

typedef int sigaction_fn(int, const struct sigaction *, struct sigaction *);
static sigaction_fn *real_sigaction;
static int installed;          /* ours is the process's SIGSEGV handler */
static struct sigaction theirs; /* the program's, called for real faults */

static void on_fault(int sig, siginfo_t *info, void *context) {
    ucontext_t *uc = (ucontext_t *)context;
    greg_t *g = uc->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)g[REG_RIP];
    if (ip[0] != 0x0f || ip[1] != 0xa2) { /* a real fault: the program's handler, or death */
        if (theirs.sa_flags & SA_SIGINFO) {
            theirs.sa_sigaction(sig, info, context);
        } else if (theirs.sa_handler != SIG_DFL && theirs.sa_handler != SIG_IGN) {
            theirs.sa_handler(sig);
        } else {
            struct sigaction dfl;
            memset(&dfl, 0, sizeof dfl);
            dfl.sa_handler = SIG_DFL;
            real_sigaction(sig, &dfl, NULL); /* returning re-runs the instruction: it dies of it */
        }
        return;
    }
    uint32_t leaf = (uint32_t)g[REG_RAX], sub = (uint32_t)g[REG_RCX], r[4];
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1);
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
    hide(leaf, sub, r);
    g[REG_RAX] = r[0];
    g[REG_RBX] = r[1];
    g[REG_RCX] = r[2];
    g[REG_RDX] = r[3];
    g[REG_RIP] += 2;
}

int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    if (!real_sigaction) {
        real_sigaction = (sigaction_fn *)dlsym(RTLD_NEXT, "sigaction");
    }
    if (sig != SIGSEGV || !installed) {
        return real_sigaction(sig, act, old);
    }
    if (old) {
        *old = theirs;
    }
    if (act) {
        theirs = *act;
    }
    return 0;
}

sighandler_t signal(int sig, sighandler_t handler) {
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    return sigaction(sig, &sa, &old) == 0 ? old.sa_handler : SIG_ERR;
}

__attribute__((constructor)) static void start(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    memset(&theirs, 0, sizeof theirs);
    theirs.sa_handler = SIG_DFL;
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, NULL) != 0 || syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0) {
        static const char msg[] = "cpuid_avx2: this kernel or CPU has no CPUID faulting "
                                  "(cpu flag cpuid_fault); cannot run as an AVX2-only CPU\n";
        ssize_t n = write(2, msg, sizeof msg - 1);
        (void)n;
        _exit(3);
    }
    installed = 1;
}
