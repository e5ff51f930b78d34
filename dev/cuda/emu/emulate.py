#!/usr/bin/env python3
"""emulate.py — rewrites a CUDA translation unit into C++ for cuda_emu.h (CPU emulation, correctness only).

    python3 dev/cuda/emu/emulate.py [-I DIR]... SOURCE.cu OUTDIR

SOURCE.cu and every .cu / .cuh file it #includes with quotes (recursively; found next to the including
file, else in the -I folders, as the compiler would) are rewritten into OUTDIR: SOURCE.cu as
OUTDIR/<its name>, each include at the path the compiler will look for it, next to the rewritten file
that includes it. The sources are never modified. Other quoted includes (model.h, train_gla.c) are
left as they are: compile with the same -I folders so that they are found. Each output file starts with
`#line 1 "<original path>"` and keeps every line where it was, so compiler errors and __LINE__ point at
the original source.

Rewrites (comments and string literals are left alone):
  kernel<<<grid, block[, smem[, stream]]>>>(args);    ->  emu::launch(kernel, "kernel", __FILE__, __LINE__,
                                                          emu::Cfg(grid, block[, smem[, stream]]), args);
      (templates `k<T, 4><<<...>>>`, qualified names, launches over several lines)
  extern __shared__ [__align__(n)] T name[];          ->  T* name = (T*)emu::dynamic_shared();
  __shared__ T a[N][M], b;                            ->  per-block references into the emulator's shared arena
  __global__ void __launch_bounds__(n[, m]) k(...)    ->  unchanged, plus a registration of n for k at the
                                                          end of the file (launches with more threads fail)
"""
import os
import re
import sys


def mask_code(s):
    """s with comments, string and character literals replaced by spaces (newlines kept), so that the
    scanners below see code only; positions are those of s."""
    out = list(s)
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if s.startswith('//', i):
            j = s.find('\n', i)
            j = n if j < 0 else j
        elif s.startswith('/*', i):
            j = s.find('*/', i + 2)
            j = n if j < 0 else j + 2
        elif c == '"' or c == "'":
            j = i + 1
            while j < n and s[j] != c:
                j += 2 if s[j] == '\\' else 1
            j += 1
            # keep the quotes so that an #include "..." stays recognisable
            for k in range(i + 1, min(j - 1, n)):
                if out[k] != '\n':
                    out[k] = ' '
            i = j
            continue
        else:
            i += 1
            continue
        for k in range(i, j):
            if out[k] != '\n':
                out[k] = ' '
        i = j
    return ''.join(out)


def match_forward(code, i, open_c, close_c):
    """index just past the bracket that closes the one at code[i]"""
    depth = 0
    for j in range(i, len(code)):
        if code[j] == open_c:
            depth += 1
        elif code[j] == close_c:
            depth -= 1
            if depth == 0:
                return j + 1
    raise ValueError('unbalanced %s at offset %d' % (open_c, i))


def split_top(text, code):
    """text split at the commas of code (its masked twin) that are outside brackets"""
    parts, depth, last = [], 0, 0
    for j, c in enumerate(code):
        if c in '([{':
            depth += 1
        elif c in ')]}':
            depth -= 1
        elif c == ',' and depth == 0:
            parts.append(text[last:j])
            last = j + 1
    parts.append(text[last:])
    return parts


def kernel_name_start(code, end):
    """start of the kernel expression that ends at code[end] (exclusive): an identifier, possibly
    qualified (a::b), possibly with template arguments <...>"""
    j = end
    while j > 0 and code[j - 1].isspace():
        j -= 1
    if code[j - 1] == '>':   # template arguments: walk back to the matching '<'
        depth = 0
        while j > 0:
            j -= 1
            if code[j] == '>':
                depth += 1
            elif code[j] == '<':
                depth -= 1
                if depth == 0:
                    break
        while j > 0 and code[j - 1].isspace():
            j -= 1
    while j > 0 and (code[j - 1].isalnum() or code[j - 1] in '_:'):
        j -= 1
    return j


def rewrite_launches(s):
    code = mask_code(s)
    out, pos, count = [], 0, 0
    while True:
        i = code.find('<<<', pos)
        if i < 0:
            break
        start = kernel_name_start(code, i)
        name = s[start:i].strip()
        close = code.find('>>>', i)
        cfg_text, cfg_code = s[i + 3:close], code[i + 3:close]
        k = close + 3
        while code[k].isspace():
            k += 1
        if code[k] != '(':
            raise ValueError('launch of %s: no argument list' % name)
        args_end = match_forward(code, k, '(', ')')
        args = s[k + 1:args_end - 1]
        cfg = split_top(cfg_text, cfg_code)
        if not 2 <= len(cfg) <= 4:
            raise ValueError('launch of %s: %d configuration values' % (name, len(cfg)))
        label = re.sub(r'\s+', ' ', name)
        call = 'emu::launch(%s, "%s", __FILE__, __LINE__, emu::Cfg(%s)%s)' % (
            name, label, ','.join(cfg), (',' + args) if args.strip() else '')
        out.append(s[pos:start])
        out.append(call)
        pos = args_end
        count += 1
    out.append(s[pos:])
    return ''.join(out), count


SHARED_EXTERN = re.compile(r'extern\s+__shared__\s+(?:__align__\s*\(\s*\d+\s*\)\s*)?([\w:<>\s\*]+?)\s+(\w+)\s*\[\s*\]\s*;')
SHARED_STATIC = re.compile(r'(?<![\w])__shared__\s+(?:__align__\s*\(\s*(\d+)\s*\)\s*)?([^;]*);')
DECLARATOR = re.compile(r'^\s*(\w+)\s*((?:\[[^\]]*\])*)\s*$')


def rewrite_shared(s):
    code = mask_code(s)
    # dynamic: extern __shared__ T name[];
    out, pos, n_dyn = [], 0, 0
    for m in SHARED_EXTERN.finditer(code):
        typ, name = ' '.join(s[m.start(1):m.end(1)].split()), m.group(2)
        out.append(s[pos:m.start()])
        out.append('%s* %s = (%s*)emu::dynamic_shared();' % (typ, name, typ))
        pos = m.end()
        n_dyn += 1
    out.append(s[pos:])
    s = ''.join(out)
    code = mask_code(s)
    # static: __shared__ T d1, d2[N], ...;  (T: everything before the first declarator)
    out, pos, n_static = [], 0, 0
    for m in SHARED_STATIC.finditer(code):
        body = s[m.start(2):m.end(2)]
        body_code = code[m.start(2):m.end(2)]
        if 'extern' in code[max(0, m.start() - 10):m.start()]:
            continue
        decls = split_top(body, body_code)
        first = re.match(r'^\s*(.*?)\s*(\w+\s*(?:\[[^\]]*\]\s*)*)$', decls[0], re.S)
        if not first:
            raise ValueError('cannot parse __shared__ declaration: %r' % body)
        typ = ' '.join(first.group(1).split())
        decls[0] = first.group(2)
        align = m.group(1)
        stmts = []
        for d in decls:
            dm = DECLARATOR.match(d)
            if not dm:
                raise ValueError('cannot parse __shared__ declarator %r (initialisers are not CUDA)' % d)
            name, dims = dm.group(1), dm.group(2).replace(' ', '')
            full = '%s%s' % (typ, dims)   # the declarator's type, e.g. float[32][33]
            al = align if align else 'alignof(%s)' % typ
            if dims:
                stmts.append('static char emu_tag_%s; %s (&%s)%s = *reinterpret_cast<%s(*)%s>('
                             'emu::static_shared(&emu_tag_%s, sizeof(%s), %s));'
                             % (name, typ, name, dims, typ, dims, name, full, al))
            else:
                stmts.append('static char emu_tag_%s; %s& %s = *reinterpret_cast<%s*>('
                             'emu::static_shared(&emu_tag_%s, sizeof(%s), %s));' % (name, typ, name, typ, name, typ, al))
        text = ' '.join(stmts)
        text += '\n' * s[m.start():m.end()].count('\n')   # keep the line count
        out.append(s[pos:m.start()])
        out.append(text)
        pos = m.end()
        n_static += 1
    out.append(s[pos:])
    return ''.join(out), n_dyn, n_static


LAUNCH_BOUNDS = re.compile(r'__global__\s+void\s+__launch_bounds__\s*\(([^()]*(?:\([^()]*\)[^()]*)*)\)\s*(\w+)\s*\(')


def launch_bounds(s):
    """registrations of the __launch_bounds__ of non-template kernels, to append to the file"""
    code = mask_code(s)
    regs = []
    for m in LAUNCH_BOUNDS.finditer(code):
        before = code[max(0, m.start() - 200):m.start()]
        last_stmt = max(before.rfind(';'), before.rfind('}'))
        if 'template' in before[last_stmt + 1:]:
            continue
        args = split_top(s[m.start(1):m.end(1)], code[m.start(1):m.end(1)])
        name = m.group(2)
        regs.append('static const bool emu_bounds_%s = emu::register_launch_bounds((const void*)%s, (int)(%s));'
                    % (name, name, args[0].strip()))
    return regs


INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([^"]+)"', re.M)


def transform(path, dst, inc_dirs, done):
    """rewrites the file at path into dst, and the .cu / .cuh files it includes next to dst"""
    path = os.path.abspath(path)
    if (path, dst) in done:
        return
    done.add((path, dst))
    s = open(path, encoding='utf-8').read()
    for m in INCLUDE.finditer(mask_code(s)):   # found in code only; the path read from the source
        inc = s[m.start(1):m.end(1)]
        if not inc.endswith(('.cu', '.cuh')):
            continue
        for d in [os.path.dirname(path)] + inc_dirs:
            cand = os.path.join(d, inc)
            if os.path.exists(cand):
                transform(cand, os.path.join(os.path.dirname(dst), inc), inc_dirs, done)
                break
        else:
            sys.exit('emulate.py: %s includes "%s", not found' % (path, inc))
    s, n_launch = rewrite_launches(s)
    s, n_dyn, n_static = rewrite_shared(s)
    regs = launch_bounds(s)
    s = '#line 1 "%s"\n%s' % (path, s)
    if regs:
        s += '\n// emulate.py: __launch_bounds__ of the kernels above\n' + '\n'.join(regs) + '\n'
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    old = open(dst, encoding='utf-8').read() if os.path.exists(dst) else None
    if old != s:   # unchanged outputs keep their timestamps
        with open(dst, 'w', encoding='utf-8') as f:
            f.write(s)
    print('emulate.py: %-40s %3d launches, %d extern __shared__, %d __shared__, %d __launch_bounds__'
          % (os.path.relpath(path), n_launch, n_dyn, n_static, len(regs)), file=sys.stderr)


def main():
    args, inc_dirs = sys.argv[1:], []
    while len(args) > 2 and args[0] == '-I':
        inc_dirs.append(os.path.abspath(args[1]))
        args = args[2:]
    if len(args) != 2:
        sys.exit(__doc__)
    src, out = args
    transform(src, os.path.join(os.path.abspath(out), os.path.basename(src)), inc_dirs, set())


if __name__ == '__main__':
    main()
