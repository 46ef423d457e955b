-- Athena (Glue Data Catalog) table over the segments the pipeline writes (run-book Appendix B,
-- updated to the real layout and row shape):
--
--   s3://pod-insights-stage/<feed_slug>/<guid_key>/segments/segments.json
--
-- JSON Lines, one row per sentence segment, as podinsight_dagster/transcribe/steps.py
-- segments_rows writes them (tests/test_iac.py checks the columns against it):
--   speaker       0 for ASR (no diarization yet); a publisher transcript's speakers numbered
--                 in order of appearance, speaker_name beside it (absent for ASR rows: NULL here)
--   avg_logprob, no_speech_prob   the model's scores; NULL for publisher transcripts
--
-- Partitions: the layout is not Hive-style (no feed_slug=... folders), so partitions come from
-- partition projection with a storage.location.template instead of MSCK REPAIR or a crawler.
-- feed_slug and guid_key are `injected`: a query names them in its WHERE clause (equality or
-- IN), e.g. WHERE feed_slug = 'tech-talk' AND guid_key IN ('ep-001', 'ep-002'). Lists of
-- episodes come from the status table (podrun status) or the manifests.
CREATE EXTERNAL TABLE IF NOT EXISTS pod_insight_segments (
  text            string,
  start_sec       double,
  end_sec         double,
  speaker         int,
  avg_logprob     double,
  no_speech_prob  double,
  speaker_name    string
)
PARTITIONED BY (
  feed_slug       string,
  guid_key        string
)
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
WITH SERDEPROPERTIES ('ignore.malformed.json' = 'false')
STORED AS INPUTFORMAT 'org.apache.hadoop.mapred.TextInputFormat'
OUTPUTFORMAT 'org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat'
LOCATION 's3://pod-insights-stage/'
TBLPROPERTIES (
  'projection.enabled'          = 'true',
  'projection.feed_slug.type'   = 'injected',
  'projection.guid_key.type'    = 'injected',
  'storage.location.template'   = 's3://pod-insights-stage/${feed_slug}/${guid_key}/segments/'
);
