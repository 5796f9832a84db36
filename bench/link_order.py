"""Makes build/link-order.txt: the functions a run executes, for the linker to place
together (see build.rs). Run by bench/link-order.sh; needs root (it turns readahead off
for the binary's disk and drops the binary from the page cache while it traces).

Two sources, combined:
  - a profile (an instrumented build, `-Cprofile-generate`): which of the crate's and
    its dependencies' functions ran at least once; exact, but blind to std, which is
    not instrumented;
  - a page trace of the release binary: with readahead off and the binary out of the
    page cache, the pages a run touches are the pages it loads (`mincore` afterwards);
    every function on such a page is a candidate.
The list keeps the candidates the profile saw run, and those it does not know (std),
in the binary's address order.
"""
import bisect
import ctypes
import mmap
import os
import re
import shutil
import subprocess
import sys
import tempfile

repo = sys.argv[1]
release = os.path.join(repo, "target", "release", "spec-runner")
work = os.path.join(repo, "target", "link-order")
out_file = os.path.join(repo, "build", "link-order.txt")


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def tool(name):
    sysroot = sh(["rustc", "--print", "sysroot"], capture_output=True, text=True).stdout.strip()
    host = next(l.split()[1] for l in sh(["rustc", "-vV"], capture_output=True, text=True).stdout.splitlines()
                if l.startswith("host:"))
    path = os.path.join(sysroot, "lib", "rustlib", host, "bin", name)
    if not os.path.exists(path):
        sh(["rustup", "component", "add", "llvm-tools"])
    return path


def prepare(scratch):
    """The pipelines the workloads run: 10,000 quick specs, and a few that retry and fail."""
    many = os.path.join(scratch, "many")
    retry = os.path.join(scratch, "retry")
    for d in (many, retry):
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(many, "p.toml"), "w") as f:
        f.write("jobs = 2\n")
        for i in range(10000):
            f.write(f'[specs.s{i:05}]\ncommand = ["true"]\n')
    with open(os.path.join(retry, "p.toml"), "w") as f:
        f.write("jobs = 2\nretry_max_retries = 2\nretry_backoff_seconds = 0.01\n"
                '[specs.ok]\ncommand = "echo done"\n'
                '[specs.flaky]\ncommand = "test -e marker || { touch marker; echo first; exit 3; }"\n'
                '[specs.broken]\ncommand = "echo no >&2; exit 1"\n'
                '[specs.after]\ncommand = ["true"]\ndepends_on = ["ok"]\n')


def workloads(binary, scratch, group):
    """The runs the layout is for. Group "apply": `apply` of 10,000 quick specs (the
    benchmark's W1), whose code goes first; group "rest": `status`, `plan`, `validate`,
    and `apply` with retries, failures and plain output, whose code goes after it."""
    many = os.path.join(scratch, "many")
    retry = os.path.join(scratch, "retry")
    for d in (many, retry):
        for state in (os.path.join(d, ".spec-runner"), os.path.join(d, "marker")):
            if group == "apply" and os.path.lexists(state):
                subprocess.run(["rm", "-rf", state], check=True)
    # Six runs of the big `apply`: some paths depend on timing (a worker finding its
    # next job taken, a blocking receive), and one run may miss a page another needs.
    big = [binary, "-f", "p.toml", "apply", "-q", "--progress", "none"]
    runs = {
        "apply": [(many, big)] + [(many, big + ["--fresh"])] * 5,
        "rest": [
            (many, [binary, "-f", "p.toml", "status"]),
            (many, [binary, "-f", "p.toml", "plan"]),
            (retry, [binary, "-f", "p.toml", "validate"]),
            (retry, [binary, "-f", "p.toml", "apply"]),
            (retry, [binary, "-f", "p.toml", "status"]),
        ],
    }[group]
    for cwd, cmd in runs:
        subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       stdin=subprocess.DEVNULL)


def readahead_file(path):
    st = os.stat(path)
    base = f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    for p in (base + "/queue/read_ahead_kb", base + "/../queue/read_ahead_kb"):
        if os.path.exists(p):
            return p
    sys.exit(f"{path} is not on a block device whose readahead can be turned off")


def touched_pages(binary, scratch):
    """The binary's pages loaded by group "apply", and by both groups."""
    ra = readahead_file(binary)
    old = open(ra).read().strip()
    fd = os.open(binary, os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    seen = []
    try:
        with open(ra, "w") as f:
            f.write("0")
        for group in ("apply", "rest"):
            workloads(binary, scratch, group)
            seen.append(resident(fd))
    finally:
        with open(ra, "w") as f:
            f.write(old)
    return seen


def resident(fd):
    """The pages of the file open as `fd` that are in the page cache (`mincore`)."""
    size = os.fstat(fd).st_size
    m = mmap.mmap(fd, size, access=mmap.ACCESS_COPY)
    n = (size + 4095) // 4096
    vec = (ctypes.c_ubyte * n)()
    libc = ctypes.CDLL(None, use_errno=True)
    ptr = ctypes.c_void_p(ctypes.addressof(ctypes.c_char.from_buffer(m)))
    if libc.mincore(ptr, ctypes.c_size_t(size), vec) != 0:
        sys.exit(f"mincore: errno {ctypes.get_errno()}")
    return [i for i in range(n) if vec[i] & 1]


def symbols(binary):
    out = []
    for line in sh(["nm", "-S", "--defined-only", binary], capture_output=True, text=True).stdout.splitlines():
        f = line.split()
        if len(f) == 4 and f[2] in "tTwWrRdD" and int(f[1], 16) > 0:
            out.append((int(f[0], 16), int(f[1], 16), f[3]))
    return sorted(out)


_segments = {}


def segments(binary):
    """The binary's loaded segments: (file offset, virtual address, size in the file)."""
    if binary not in _segments:
        segs = []
        for line in sh(["readelf", "-lW", binary], capture_output=True, text=True).stdout.splitlines():
            f = line.split()
            if f and f[0] == "LOAD":
                segs.append((int(f[1], 16), int(f[2], 16), int(f[4], 16)))
        _segments[binary] = segs
    return _segments[binary]


def candidates(binary, pages):
    """Symbols overlapping a touched page, in address order."""
    spans = []
    for p in pages:
        lo, hi = p * 4096, p * 4096 + 4096
        for off, va, size in segments(binary):
            a, b = max(lo, off), min(hi, off + size)
            if a < b:
                spans.append((va + a - off, va + b - off))
    # Merged into disjoint stretches: a symbol overlaps one only if the last stretch
    # that starts before the symbol ends reaches past its start.
    merged = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    starts = [a for a, _ in merged]
    hit = []
    for addr, size, name in symbols(binary):
        i = bisect.bisect_left(starts, addr + size) - 1
        if i >= 0 and merged[i][1] > addr:
            hit.append((addr, size, name))
    return hit


def file_offset(binary, vaddr):
    """The file offset of a virtual address of the binary (None outside its segments)."""
    for off, va, size in segments(binary):
        if va <= vaddr < va + size:
            return off + vaddr - va
    return None


def profile(scratch):
    """Per group: the functions the instrumented build knows, and those that ran."""
    pgo = os.path.join(work, "pgo")
    raw = os.path.join(work, "raw")
    shutil.rmtree(raw, ignore_errors=True)
    env = dict(os.environ, RUSTFLAGS=f"-Cprofile-generate={raw}", SPEC_RUNNER_LINK_ORDER="0")
    sh(["cargo", "build", "--release", "--locked", "--quiet", "--target-dir", pgo], cwd=repo, env=env)
    profdata = tool("llvm-profdata")
    known, ran = set(), {}
    for group in ("apply", "rest"):
        os.environ["LLVM_PROFILE_FILE"] = os.path.join(raw, group, "%p.profraw")
        workloads(os.path.join(pgo, "release", "spec-runner"), scratch, group)
        del os.environ["LLVM_PROFILE_FILE"]
        merged = os.path.join(work, f"{group}.profdata")
        files = os.path.join(raw, group)
        sh([profdata, "merge", "-o", merged] + [os.path.join(files, f) for f in os.listdir(files)])
        text = sh([profdata, "show", "--all-functions", "--counts", merged],
                  capture_output=True, text=True).stdout
        ran[group], name = set(), None
        for line in text.splitlines():
            if line.startswith("  ") and not line.startswith("   ") and line.endswith(":"):
                name = unhashed(line.strip()[:-1].split(";")[-1])
                known.add(name)
            elif name and line.strip().startswith("Block counts:"):
                if re.search(r"[1-9]", line.split(":", 1)[1]):
                    ran[group].add(name)
    return known, ran


def unhashed(symbol):
    # Legacy mangling ends in a hash of the crate's build metadata: compare without it.
    return re.sub(r"17h[0-9a-f]{16}E$", "", symbol)


def chosen(binary, hit, pages, known, ran):
    """The functions on `pages` that ran, or that the profile does not know (std); and
    every function of a touched page where the profile saw none of them run (a path
    its runs did not take, or code no symbol covers), rather than leave that page to
    map 64 KiB around it on its own."""
    touched = set(pages)

    def pages_of(addr, size):
        off = file_offset(binary, addr)
        return set() if off is None else set(range(off // 4096, (off + size - 1) // 4096 + 1))

    on = {name: pages_of(addr, size) & touched for addr, size, name in hit}
    keep = {name for name, ps in on.items() if ps and (unhashed(name) in ran or unhashed(name) not in known)}
    by_page = {}
    for name, ps in on.items():
        for p in ps:
            by_page.setdefault(p, []).append(name)
    for names in by_page.values():
        if not any(name in keep for name in names):
            keep.update(names)
    return keep


def main():
    if os.geteuid() != 0:
        sys.exit("bench/link-order.sh needs root (readahead and the page cache)")
    os.makedirs(work, exist_ok=True)
    scratch = tempfile.mkdtemp(dir=work)
    prepare(scratch)
    sh(["cargo", "build", "--release", "--locked", "--quiet"], cwd=repo)
    binary = os.path.join(work, "spec-runner")
    shutil.copy(release, binary)
    known, ran = profile(scratch)
    pages_apply, pages_all = touched_pages(binary, scratch)
    hit = candidates(binary, pages_all)
    first = chosen(binary, hit, pages_apply, known, ran["apply"])
    every = chosen(binary, hit, pages_all, known, ran["apply"] | ran["rest"]) | first
    # `apply`'s code first, then what only the other commands run: a big run maps the
    # first stretch only.
    order = [name for _, _, name in hit if name in first]
    order += [name for _, _, name in hit if name in every and name not in first]
    sizes = {name: size for _, size, name in symbols(binary)}
    os.makedirs(os.path.dirname(out_file), exist_ok=True)
    with open(out_file, "w") as f:
        f.write("\n".join(order) + "\n")
    kib = lambda names: sum(sizes[n] for n in names) // 1024
    print(f"{len(pages_apply)} pages touched by apply, {len(pages_all)} by all; {len(hit)} functions "
          f"on them ({kib(n for _, _, n in hit)} KiB); kept {len(first)} for apply ({kib(first)} KiB), "
          f"{len(order) - len(first)} more for the rest ({kib(order) - kib(first)} KiB) in "
          f"{os.path.relpath(out_file, repo)}; rebuild to use it")
    shutil.rmtree(scratch, ignore_errors=True)


main()
