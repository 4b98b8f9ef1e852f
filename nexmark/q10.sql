-- q10, log to the file system: every bid written to CSV files partitioned by date and minute,
-- `dt=yyyy-MM-dd/hm=HH%3Amm` (':' escaped as Flink escapes partition paths), without the dt and hm
-- columns (the directory carries them), published exactly once at each checkpoint, with a
-- `_SUCCESS` file in each partition that received files. Flink's q10 commits a partition by
-- partition time ('sink.partition-commit.trigger' = 'partition-time', '1 min' delay) and rolls
-- files every minute; Keel commits a partition when the checkpoint publishing its files completes
-- and writes one file per partition, subtask and checkpoint. `keel bench nexmark` fills in
-- ${OUTPUT_DIR} (an empty directory under its data directory).
CREATE TABLE fs_sink (
  auction BIGINT, bidder BIGINT, price BIGINT, dateTime TIMESTAMP(3), extra VARCHAR, dt STRING, hm STRING
) PARTITIONED BY (dt, hm)
WITH ('connector' = 'filesystem', 'path' = '${OUTPUT_DIR}', 'format' = 'csv',
  'sink.partition-commit.policy.kind' = 'success-file');

INSERT INTO fs_sink
SELECT auction, bidder, price, dateTime, extra, DATE_FORMAT(dateTime, 'yyyy-MM-dd'), DATE_FORMAT(dateTime, 'HH:mm')
FROM bid;
