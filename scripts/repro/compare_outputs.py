"""Compare two output trees of scripts/repro/tiny_runs.sh (old binary vs new binary).

- identical bytes: "identical";
- JSON: equal once fields that measure time or name the revision are masked: "same-but-timing";
- safetensors: every tensor byte-identical and the JSON metadata equal once masked the same way:
  "same-tensors-timing-meta";
- markdown: the lines that differ are listed, for the reader to check they are timing columns.
Anything else is a difference. usage: compare_outputs.py OLD NEW
"""
import json, os, re, struct, sys

a, b = sys.argv[1], sys.argv[2]
TIME = re.compile(r'(ms|_s$|secs|seconds|wall|started|git_revision|time|ratio|elapsed|per_step)', re.I)


def norm(v):
    if isinstance(v, dict):
        return {k: ("<t>" if TIME.search(k) else norm(x)) for k, x in v.items()}
    if isinstance(v, list):
        return [norm(x) for x in v]
    if isinstance(v, str) and v[:1] in "{[":
        try:
            return norm(json.loads(v))
        except ValueError:
            pass
    return v


def safetensors(path):
    data = open(path, 'rb').read()
    n = struct.unpack('<Q', data[:8])[0]
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    meta = header.pop('__metadata__', {})
    tensors = {k: (v['dtype'], v['shape'], body[v['data_offsets'][0]:v['data_offsets'][1]])
               for k, v in header.items()}
    return tensors, norm(meta)


bad = 0
md = []
for root, _, files in os.walk(a):
    for f in sorted(files):
        pa = os.path.join(root, f); rel = os.path.relpath(pa, a); pb = os.path.join(b, rel)
        if f.endswith('.log'):
            continue
        if not os.path.exists(pb):
            print("MISSING", rel); bad += 1; continue
        da, db = open(pa, 'rb').read(), open(pb, 'rb').read()
        if da == db:
            status = "identical"
        elif f.endswith('.json'):
            try:
                status = "same-but-timing" if norm(json.loads(da)) == norm(json.loads(db)) else "DIFFERENT"
            except Exception as e:
                status = "DIFFERENT(json? %s)" % e
        elif f.endswith('.safetensors'):
            ta, ma = safetensors(pa)
            tb, mb = safetensors(pb)
            status = "same-tensors-timing-meta" if ta == tb and ma == mb else "DIFFERENT-tensors"
        elif f.endswith('.md'):
            la, lb = da.decode().splitlines(), db.decode().splitlines()
            changed = [(x, y) for x, y in zip(la, lb) if x != y]
            status = "md-lines-differ" if len(la) == len(lb) else "DIFFERENT-md"
            md.append((rel, changed))
            if len(la) != len(lb):
                bad += 1
        else:
            status = "DIFFERENT-bytes"
        if status.startswith("DIFF"):
            bad += 1
        print(f"{status:26} {rel}")
for rel, changed in md:
    print(f"\n{rel}: {len(changed)} line(s) differ (check that only timing columns do):")
    for x, y in changed:
        print("  -", x); print("  +", y)
print("\ndifferences (tensors, JSON without timing, files):", bad)
