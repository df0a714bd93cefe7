import json, sys, os, re, hashlib
a, b = sys.argv[1], sys.argv[2]
TIME = re.compile(r'(ms|_s$|secs|seconds|wall|started|git_revision|time|ratio|elapsed|per_step)', re.I)
def norm(v):
    if isinstance(v, dict):
        return {k: ("<t>" if TIME.search(k) else norm(x)) for k, x in v.items()}
    if isinstance(v, list): return [norm(x) for x in v]
    return v
bad = 0
for root, _, files in os.walk(a):
    for f in sorted(files):
        pa = os.path.join(root, f); rel = os.path.relpath(pa, a); pb = os.path.join(b, rel)
        if f.endswith('.log'): continue
        if not os.path.exists(pb): print("MISSING", rel); bad += 1; continue
        da, db = open(pa,'rb').read(), open(pb,'rb').read()
        if da == db: status = "identical"
        elif f.endswith('.json'):
            try:
                ja, jb = norm(json.loads(da)), norm(json.loads(db))
                status = "same-but-timing" if ja == jb else "DIFFERENT"
            except Exception as e: status = "DIFFERENT(json? %s)" % e
        else: status = "DIFFERENT-bytes"
        if status.startswith("DIFF"): bad += 1
        print(f"{status:18} {rel}")
print("differences:", bad)
