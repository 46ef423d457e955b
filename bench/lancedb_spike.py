"""The LanceDB spike (issue 17 item 2): LanceDB 0.40.0 against moto's server, concurrent appends, and its query
speed beside the SQLite index on the same synthetic passages. Not a test, and LanceDB is not a dependency:

    python -m pip install --target /tmp/lancespike/site lancedb==0.40.0
    LANCEDB_SITE=/tmp/lancespike/site .venv/bin/python bench/lancedb_spike.py moto      # S3 and s3+ddb on moto
    LANCEDB_SITE=/tmp/lancespike/site .venv/bin/python bench/lancedb_spike.py speed 1000  # 1,000 episodes

Figures and the decision: docs/BENCHMARKS.md, "Shared index".
"""
import os
import sys

sys.path.append(os.environ.get("LANCEDB_SITE", "/tmp/lancespike/site"))
if sys.argv[1:2] == ["moto"]:
    sys.argv = sys.argv[:1]
    # --- moto: plain S3 and the DynamoDB commit store, two processes appending at once
    import os, sys, time, subprocess, json
    import numpy as np
    from moto.server import ThreadedMotoServer
    import boto3
    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False); srv.start()
    host, port = srv.get_host_and_port(); url = f"http://{host}:{port}"
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1"); s3.create_bucket(Bucket="idx")
    ddb = boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1")
    ddb.create_table(TableName="commits", KeySchema=[{"AttributeName":"base_uri","KeyType":"HASH"},{"AttributeName":"version","KeyType":"RANGE"}],
      AttributeDefinitions=[{"AttributeName":"base_uri","AttributeType":"S"},{"AttributeName":"version","AttributeType":"N"}], BillingMode="PAY_PER_REQUEST")
    opts = {"endpoint": url, "allow_http": "true", "region": "us-east-1", "aws_access_key_id": "testing", "aws_secret_access_key": "testing", "aws_endpoint": url, "dynamodb_endpoint": url}
    import lancedb, pyarrow as pa
    print("lancedb", lancedb.__version__)
    for uri in ("s3://idx/plain", "s3+ddb://idx/ddb?ddbTableName=commits"):
        t0 = time.time()
        try:
            db = lancedb.connect(uri, storage_options=opts)
            tbl = db.create_table("p", data=[{"id": 0, "text": "brain and sleep", "vec": np.zeros(384, dtype=np.float32).tolist()}])
            print(uri, "create ok", time.time()-t0, tbl.count_rows())
        except Exception as e:
            print(uri, "FAILED", type(e).__name__, str(e)[:400])
            continue
        code = f"""
    import sys; sys.path.append({os.environ.get('LANCEDB_SITE', '/tmp/lancespike/site')!r})
    import lancedb, numpy as np
    db = lancedb.connect({uri!r}, storage_options={opts!r})
    t = db.open_table('p')
    fails=0
    for i in range(20):
        try:
            t.add([{{'id': int(sys.argv[1])*1000+i, 'text': 'x', 'vec': np.zeros(384, dtype=np.float32).tolist()}}])
        except Exception as e:
            fails+=1; print('ERR', type(e).__name__, str(e)[:200])
    print('fails', fails)
    """
        code = __import__("textwrap").dedent(code)
        procs = [subprocess.Popen([sys.executable, "-c", code, str(k)], env=os.environ) for k in (1, 2)]
        for p in procs: p.wait()
        tbl = db.open_table("p")
        print(uri, "rows after concurrent appends", tbl.count_rows(), "(expect 41)", time.time()-t0)
    srv.stop()
else:
    import sys, time, statistics, shutil
    from pathlib import Path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__)))); sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import numpy as np
    import archive_bench as ab
    from podinsight_dagster.archive.index import TranscriptIndex, passages_of
    from podinsight_dagster.archive import vectors
    import lancedb, pyarrow as pa
    N = int(sys.argv[2])
    rng = np.random.default_rng(12); vocab = ab.vocabulary(rng)
    docs = list(ab.episodes(rng, vocab, 0, N))
    work = Path("/tmp/lancespike/speed"); shutil.rmtree(work, ignore_errors=True); work.mkdir()
    emb = {}
    for d in docs:
        n = len(passages_of(d.segments)); v = rng.standard_normal((n, 384)).astype(np.float32); v /= np.linalg.norm(v, axis=1, keepdims=True); emb[d.partition_key] = v
    t=time.time(); idx = TranscriptIndex(work/"i.sqlite", encoder=object())
    for i in range(0, N, 100): idx.index(docs[i:i+100], embeddings=emb)
    idx.optimize(); print("sqlite load", round(time.time()-t,1), idx.stats())
    rows = []
    for d in docs:
        for n,(text, start, segs) in enumerate(passages_of(d.segments)):
            rows.append((d.partition_key, d.feed_slug, n, text, start, emb[d.partition_key][n]))
    t=time.time()
    db = lancedb.connect(str(work/"lance"))
    tbl = db.create_table("passages", data=pa.table({"pk": [r[0] for r in rows], "feed": [r[1] for r in rows], "n": [r[2] for r in rows],
      "text": [r[3] for r in rows], "start": [r[4] for r in rows],
      "vec": pa.FixedSizeListArray.from_arrays(pa.array(np.stack([r[5] for r in rows]).ravel()), 384)}))
    tbl.create_fts_index("text", with_position=True)
    print("lance load", round(time.time()-t,1), tbl.count_rows())
    words = [str(vocab[int(r)]) for r in np.exp(rng.uniform(np.log(200), np.log(20000), 50)).astype(int)]
    import harness
    def med(fn, qs):
        return harness.latency_stats(harness.times_ms(fn, qs))["median_ms"]
    print("fts sqlite", med(lambda q: idx.search(q, limit=10, log=False), words))
    print("fts lance ", med(lambda q: tbl.search(q, query_type="fts").limit(10).to_list(), words))
    qs = [v for v in rng.standard_normal((20,384)).astype(np.float32)]
    qs = [q/np.linalg.norm(q) for q in qs]
    idx.meaning_ranking("x", q=qs[0])
    print("vec sqlite+scan", med(lambda q: idx.meaning_ranking("x", q=q, depth=100), qs))
    tbl.search(qs[0]).limit(10).to_list()
    print("vec lance flat ", med(lambda q: tbl.search(q).metric("cosine").limit(100).to_list(), qs))
    print("hybrid lance ", med(lambda q: tbl.search(query_type="hybrid").vector(q).text(words[0]).limit(10).to_list(), qs))
