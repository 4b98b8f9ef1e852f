//! Every input the fuzzers kept (`fuzz/corpus/TARGET/`) and every crash or failed property they
//! ever found (`fuzz/regressions/TARGET/`, each fixed since) is replayed through the same target
//! body (`keel::fuzzing`), so a decoder that regresses fails the normal test suite. See
//! `scripts/fuzz.sh` and docs/RELIABILITY.md.

mod common;

#[test]
fn every_kept_fuzz_input_and_every_past_finding_passes() {
    let root = common::manifest_dir().join("fuzz");
    let mut replayed = 0;
    for (name, target) in keel::fuzzing::TARGETS {
        let mut inputs = vec![];
        for kind in ["corpus", "regressions"] {
            let dir = root.join(kind).join(name);
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for e in entries {
                inputs.push(e.unwrap().path());
            }
        }
        inputs.sort();
        assert!(!inputs.is_empty(), "no corpus for fuzz target {name} under {}", root.display());
        for path in inputs {
            // A fuzzer running on the corpus at the same time replaces files as it minimizes.
            let Ok(data) = std::fs::read(&path) else { continue };
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "fuzz target {name} fails on {}", path.display());
            replayed += 1;
        }
    }
    println!("replayed {replayed} fuzz inputs");
}

/// Writes the seed inputs of the targets whose seeds are binary formats Keel writes (Parquet
/// files, staged transactions, topic metadata) into `fuzz/corpus/` where they are missing. Run by
/// `scripts/fuzz-seeds.sh`; ignored in the suite (the corpus is committed).
#[test]
#[ignore]
fn write_binary_seed_corpus() {
    use arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use std::sync::Arc;
    let corpus = common::manifest_dir().join("fuzz/corpus");
    let missing = |t: &str| std::fs::read_dir(corpus.join(t)).map_or(true, |mut d| d.next().is_none());
    if missing("parquet_file") {
        std::fs::create_dir_all(corpus.join("parquet_file")).unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8, true),
            Field::new("i", DataType::Int64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]));
        let batch = arrow::array::RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec![Some("a"), None, Some("c")])),
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(TimestampMillisecondArray::from(vec![0, 1000, 2000])),
            ],
        )
        .unwrap();
        for (name, compression) in [
            ("plain.parquet", parquet::basic::Compression::UNCOMPRESSED),
            ("snappy.parquet", parquet::basic::Compression::SNAPPY),
        ] {
            let props = parquet::file::properties::WriterProperties::builder().set_compression(compression).build();
            let file = std::fs::File::create(corpus.join("parquet_file").join(name)).unwrap();
            let mut w = parquet::arrow::ArrowWriter::try_new(file, schema.clone(), Some(props)).unwrap();
            w.write(&batch).unwrap();
            w.close().unwrap();
        }
    }
    if missing("staged_txn") {
        let dir = tempfile::tempdir().unwrap();
        let log = keel::log::Log::open(dir.path()).unwrap();
        let topic = log.create_topic("out", keel::log::TopicConfig::new(1)).unwrap();
        let mut w =
            keel::connectors::staging::StagedTopicWriter::open(topic, &dir.path().join("job"), "sink", "r", 0, 1, None)
                .unwrap();
        w.write(0, Some(b"key"), b"{\"a\":1}").unwrap();
        w.write(0, None, b"").unwrap();
        w.write(0, None, b"{\"b\":[1,2,3]}").unwrap();
        w.pre_commit(1).unwrap();
        let staged = dir.path().join(format!("job/staging/sink/0/txn-{:020}-p0.stage2", 1));
        std::fs::create_dir_all(corpus.join("staged_txn")).unwrap();
        // The target's first byte chooses the format: even for `.stage2`, odd for 0.1's `.stage`.
        let v2 = [vec![0u8], std::fs::read(staged).unwrap()].concat();
        std::fs::write(corpus.join("staged_txn/three-records"), v2).unwrap();
        // A file of Keel 0.1: no header, no checksums.
        let mut old = vec![1u8];
        old.extend_from_slice(&(-1i32).to_le_bytes());
        old.extend_from_slice(&2u32.to_le_bytes());
        old.extend_from_slice(b"{}");
        std::fs::write(corpus.join("staged_txn/keel-0.1"), old).unwrap();
    }
    if missing("topic_metadata") {
        let dir = tempfile::tempdir().unwrap();
        let log = keel::log::Log::open(dir.path()).unwrap();
        let mut config = keel::log::TopicConfig::new(1);
        config.segment_bytes = 1024;
        let t = log.create_topic("t", config).unwrap();
        let mut w = t.writer(0, keel::log::Durability::OsBuffer).unwrap();
        for seq in 1..=5 {
            w.commit_txn(9, seq, &[keel::log::Record::new(None, vec![b'x'; 600])]).unwrap();
        }
        let piece = |b: &[u8]| {
            let mut out = (b.len() as u16).to_le_bytes().to_vec();
            out.extend_from_slice(b);
            out
        };
        let topic_json = std::fs::read(dir.path().join("topics/t/topic.json")).unwrap();
        let producers = std::fs::read(dir.path().join("topics/t/p-0000/producers.json")).unwrap();
        std::fs::create_dir_all(corpus.join("topic_metadata")).unwrap();
        std::fs::write(corpus.join("topic_metadata/both"), [piece(&topic_json), piece(&producers)].concat()).unwrap();
        std::fs::write(corpus.join("topic_metadata/legacy"), piece(br#"{"partitions": 2, "segment_bytes": 4096}"#))
            .unwrap();
    }
}
