//! The data pipeline: `InMemoryDataset`, seeded splits, the `Standardizer` and the
//! `DataLoader` (batch counts, seeded shuffling per epoch, every sample once per epoch).

use strata_models::ModelsError;
use strata_models::data::{
    Batch, DataLoader, Dataset, InMemoryDataset, Label, Labels, Standardizer,
};

/// `n` samples of shape `[2]` whose features are `[i, -i]` and whose class is `i % 3`.
fn indexed(n: usize) -> InMemoryDataset {
    let features = (0..n).flat_map(|i| [i as f32, -(i as f32)]).collect();
    let labels = Labels::Classes {
        indices: (0..n).map(|i| i % 3).collect(),
        classes: 3,
    };
    InMemoryDataset::new(features, &[2], labels).unwrap()
}

/// The sample indices of a batch of [`indexed`] data, checking that features and labels
/// travelled together.
fn batch_indices(batch: &Batch) -> Vec<usize> {
    assert_eq!(batch.x.shape()[1..], [2]);
    let x = batch.x.to_vec();
    let classes = batch
        .classes
        .as_ref()
        .expect("classification data")
        .to_vec();
    assert!(batch.values.is_none());
    assert_eq!(classes.len(), batch.len());
    x.chunks(2)
        .zip(classes)
        .map(|(row, class)| {
            let i = row[0] as usize;
            assert_eq!(row[1], -row[0]);
            assert_eq!(class as usize, i % 3);
            i
        })
        .collect()
}

fn epoch_order<D: Dataset + ?Sized>(loader: &DataLoader<'_, D>, epoch: u64) -> Vec<usize> {
    loader
        .epoch(epoch)
        .flat_map(|b| batch_indices(&b))
        .collect()
}

#[test]
fn batch_counts_with_and_without_drop_last() {
    let data = indexed(10);
    let sizes = |loader: DataLoader<'_, InMemoryDataset>| {
        let sizes: Vec<usize> = loader.epoch(0).map(|b| b.len()).collect();
        assert_eq!(sizes.len(), loader.num_batches());
        sizes
    };
    assert_eq!(sizes(DataLoader::new(&data, 4)), [4, 4, 2]);
    assert_eq!(sizes(DataLoader::new(&data, 4).drop_last(true)), [4, 4]);
    assert_eq!(
        sizes(DataLoader::new(&data, 4).shuffle(3).drop_last(true)),
        [4, 4]
    );
    assert_eq!(sizes(DataLoader::new(&data, 5)), [5, 5]);
    assert_eq!(sizes(DataLoader::new(&data, 5).drop_last(true)), [5, 5]);
    assert_eq!(sizes(DataLoader::new(&data, 10)), [10]);
    assert_eq!(sizes(DataLoader::new(&data, 11)), [10]);
    assert_eq!(
        sizes(DataLoader::new(&data, 11).drop_last(true)),
        Vec::<usize>::new()
    );
    assert_eq!(sizes(DataLoader::new(&data, 1).drop_last(true)), [1; 10]);
    // A batch size of 0 is taken as 1.
    assert_eq!(sizes(DataLoader::new(&data, 0)), [1; 10]);
    // No samples, no batches.
    let empty = indexed(0);
    assert!(empty.is_empty());
    assert_eq!(
        sizes(DataLoader::new(&empty, 4).shuffle(1)),
        Vec::<usize>::new()
    );
}

#[test]
fn unshuffled_batches_are_in_order() {
    let data = indexed(7);
    let loader = DataLoader::new(&data, 3);
    assert_eq!(epoch_order(&loader, 0), (0..7).collect::<Vec<_>>());
    assert_eq!(epoch_order(&loader, 5), (0..7).collect::<Vec<_>>());
}

#[test]
fn every_sample_once_per_epoch() {
    let data = indexed(103);
    let loader = DataLoader::new(&data, 8).shuffle(42);
    for epoch in 0..5 {
        let mut seen = epoch_order(&loader, epoch);
        seen.sort_unstable();
        assert_eq!(seen, (0..103).collect::<Vec<_>>(), "epoch {epoch}");
    }
    // With drop_last, the 7 left over are each epoch's last 7 of a permutation: no sample
    // twice, 96 in all.
    let loader = DataLoader::new(&data, 8).shuffle(42).drop_last(true);
    for epoch in 0..5 {
        let mut seen = epoch_order(&loader, epoch);
        assert_eq!(seen.len(), 96);
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 96, "a sample came twice in epoch {epoch}");
    }
}

#[test]
fn shuffling_is_seeded_per_epoch() {
    let data = indexed(64);
    let a = DataLoader::new(&data, 16).shuffle(7);
    let b = DataLoader::new(&data, 16).shuffle(7);
    let c = DataLoader::new(&data, 16).shuffle(8);
    let identity: Vec<usize> = (0..64).collect();
    let orders: Vec<Vec<usize>> = (0..4).map(|e| epoch_order(&a, e)).collect();
    for (e, order) in orders.iter().enumerate() {
        // The same seed and epoch give the same order, again and from another loader.
        assert_eq!(&epoch_order(&a, e as u64), order);
        assert_eq!(&epoch_order(&b, e as u64), order);
        // Another seed, another order; and no epoch is left unshuffled.
        assert_ne!(&epoch_order(&c, e as u64), order);
        assert_ne!(order, &identity);
    }
    // Every epoch differs from every other.
    for i in 0..orders.len() {
        for j in i + 1..orders.len() {
            assert_ne!(orders[i], orders[j], "epochs {i} and {j}");
        }
    }
    // Batches hold the same samples as the flat order, in chunks.
    let batches: Vec<Vec<usize>> = a.epoch(2).map(|b| batch_indices(&b)).collect();
    assert_eq!(batches.concat(), orders[2]);
}

#[test]
fn batches_of_regression_data_and_of_large_samples() {
    // Regression values travel as f32 targets.
    let data = InMemoryDataset::new(
        (0..12).map(|v| v as f32).collect(),
        &[2, 1, 1],
        Labels::Values((0..6).map(|v| v as f32 * 10.0).collect()),
    )
    .unwrap();
    let batch = DataLoader::new(&data, 4).epoch(0).nth(1).unwrap();
    assert_eq!(batch.x.shape(), &[2, 2, 1, 1]);
    assert_eq!(batch.x.to_vec(), [8.0, 9.0, 10.0, 11.0]);
    assert_eq!(batch.values.as_ref().unwrap().to_vec(), [40.0, 50.0]);
    assert!(batch.classes.is_none());
    assert!(!batch.is_empty());

    // Batches of at least 2^16 values are collated in parallel: same result.
    let per = 64 * 64;
    let n = 40;
    let features: Vec<f32> = (0..n * per).map(|v| (v % 9973) as f32).collect();
    let labels = Labels::Classes {
        indices: (0..n).map(|i| i % 10).collect(),
        classes: 10,
    };
    let big = InMemoryDataset::new(features.clone(), &[1, 64, 64], labels).unwrap();
    let loader = DataLoader::new(&big, 16).shuffle(1);
    let mut count = 0;
    for batch in loader.epoch(3) {
        assert_eq!(batch.x.shape()[1..], [1, 64, 64]);
        let x = batch.x.to_vec();
        let classes = batch.classes.as_ref().unwrap().to_vec();
        for (row, class) in x.chunks(per).zip(classes) {
            let i = features
                .chunks(per)
                .position(|r| r == row)
                .expect("a sample of the data set");
            assert_eq!(class as usize, i % 10);
            count += 1;
        }
    }
    assert_eq!(count, n);
}

#[test]
fn split_sizes_and_coverage() {
    let data = indexed(10);
    let parts = data.split(&[0.8, 0.2], 0).unwrap();
    assert_eq!(parts.iter().map(Dataset::len).collect::<Vec<_>>(), [8, 2]);
    let all_indices = |parts: &[InMemoryDataset]| -> Vec<usize> {
        parts
            .iter()
            .flat_map(|p| {
                DataLoader::new(p, 100)
                    .epoch(0)
                    .flat_map(|b| batch_indices(&b))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let mut seen = all_indices(&parts);
    seen.sort_unstable();
    assert_eq!(seen, (0..10).collect::<Vec<_>>());

    // Fractions summing to less than 1 leave the rest out; to 1, the last takes the rest.
    let data = indexed(100);
    let sizes = |f: &[f64]| {
        data.split(f, 5)
            .unwrap()
            .iter()
            .map(Dataset::len)
            .collect::<Vec<_>>()
    };
    assert_eq!(sizes(&[0.5, 0.3]), [50, 30]);
    assert_eq!(sizes(&[0.7, 0.2, 0.1]), [70, 20, 10]);
    assert_eq!(sizes(&[0.34, 0.33, 0.33]), [34, 33, 33]);
    assert_eq!(sizes(&[0.335, 0.335, 0.33]), [34, 34, 32]);
    assert_eq!(sizes(&[1.0]), [100]);
    assert_eq!(sizes(&[0.25]), [25]);
    let mut seen = all_indices(&data.split(&[0.5, 0.3], 5).unwrap());
    assert_eq!(seen.len(), 80);
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 80, "parts overlap");
}

#[test]
fn split_is_deterministic_and_seeded() {
    let data = indexed(50);
    let a = data.split(&[0.6, 0.4], 9).unwrap();
    let b = data.split(&[0.6, 0.4], 9).unwrap();
    let c = data.split(&[0.6, 0.4], 10).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    // A split is a shuffle, not the first 60 %.
    assert_ne!(a[0], data.subset(&(0..30).collect::<Vec<_>>()));
    assert_eq!(a[0].classes(), Some(3));
}

#[test]
fn split_errors() {
    let data = indexed(3);
    for bad in [
        &[1.2][..],
        &[-0.1, 0.5],
        &[0.6, 0.6],
        &[f64::NAN],
        &[0.5, f64::INFINITY],
    ] {
        match data.split(bad, 0) {
            Err(ModelsError::Config(msg)) => assert!(msg.contains("bad split fractions"), "{msg}"),
            other => panic!("{bad:?}: expected a config error, got {other:?}"),
        }
    }
    // round(0.1 · 3) = 0 samples.
    match data.split(&[0.1, 0.9], 0) {
        Err(ModelsError::Config(msg)) => assert!(msg.contains("leaves part 0 empty"), "{msg}"),
        other => panic!("expected a config error, got {other:?}"),
    }
    match indexed(0).split(&[0.5, 0.5], 0) {
        Err(ModelsError::Config(msg)) => assert!(msg.contains("empty"), "{msg}"),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn subset_and_map_features() {
    let data = indexed(6);
    let sub = data.subset(&[4, 1, 4]);
    assert_eq!(sub.len(), 3);
    assert_eq!(sub.features(), &[4.0, -4.0, 1.0, -1.0, 4.0, -4.0]);
    assert_eq!(
        sub.labels(),
        &Labels::Classes {
            indices: vec![1, 1, 1],
            classes: 3
        }
    );
    let mut scaled = sub.clone();
    scaled.map_features(|v| v * 0.5);
    assert_eq!(scaled.features(), &[2.0, -2.0, 0.5, -0.5, 2.0, -2.0]);
    let mut out = [0.0; 2];
    assert_eq!(scaled.read(1, &mut out), Label::Class(1));
    assert_eq!(out, [0.5, -0.5]);
}

#[test]
fn standardizer_gives_zero_mean_and_unit_variance() {
    // Four features on very different scales, the last one constant.
    let n = 200;
    let features: Vec<f32> = (0..n)
        .flat_map(|i| {
            let t = i as f32;
            [t, 1000.0 + 50.0 * (t * 0.37).sin(), -3e-3 * (t % 17.0), 7.5]
        })
        .collect();
    let mut train = InMemoryDataset::new(features, &[4], Labels::Values(vec![0.0; n])).unwrap();
    let st = Standardizer::fit(&train);
    assert_eq!(st.mean.len(), 4);
    assert!((st.mean[0] - 99.5).abs() < 1e-4, "{:?}", st.mean);
    // Population standard deviation of 0..200: sqrt((200² - 1) / 12).
    assert!(
        (st.std[0] - ((200.0f32 * 200.0 - 1.0) / 12.0).sqrt()).abs() < 1e-3,
        "{:?}",
        st.std
    );
    assert_eq!((st.mean[3], st.std[3]), (7.5, 1.0));
    let raw = train.clone();
    st.apply(&mut train).unwrap();
    for f in 0..4 {
        let col: Vec<f64> = train
            .features()
            .iter()
            .skip(f)
            .step_by(4)
            .map(|&v| v as f64)
            .collect();
        let mean = col.iter().sum::<f64>() / n as f64;
        let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 1e-5, "feature {f}: mean {mean}");
        if f == 3 {
            // A constant feature is centred, not divided by zero.
            assert!(col.iter().all(|&v| v == 0.0), "feature {f}: {col:?}");
        } else {
            assert!((var - 1.0).abs() < 1e-4, "feature {f}: variance {var}");
        }
    }
    // Applied to other data, it uses the fitted statistics.
    let mut other = raw.subset(&[3, 150]);
    st.apply(&mut other).unwrap();
    let expected: Vec<f32> = raw
        .subset(&[3, 150])
        .features()
        .iter()
        .enumerate()
        .map(|(k, &v)| (v - st.mean[k % 4]) / st.std[k % 4])
        .collect();
    assert_eq!(other.features(), expected.as_slice());
    // Refitting on standardised data gives the identity, near enough.
    let again = Standardizer::fit(&train);
    assert!(
        again.mean.iter().all(|m| m.abs() < 1e-5)
            && again.std[..3].iter().all(|s| (s - 1.0).abs() < 1e-4),
        "{again:?}"
    );
}

#[test]
fn standardizer_rejects_other_feature_counts() {
    let st = Standardizer::fit(&indexed(5));
    let mut wide = InMemoryDataset::new(vec![0.0; 6], &[3], Labels::Values(vec![0.0; 2])).unwrap();
    match st.apply(&mut wide) {
        Err(ModelsError::Config(msg)) => {
            assert!(msg.contains("fitted on 2 features, data has 3"), "{msg}")
        }
        other => panic!("expected a config error, got {other:?}"),
    }
    assert_eq!(
        wide.features(),
        &[0.0; 6],
        "a failed apply must not touch the data"
    );
}

#[test]
fn in_memory_dataset_new_errors() {
    let classes = |indices: Vec<usize>, classes: usize| Labels::Classes { indices, classes };
    match InMemoryDataset::new(vec![0.0; 3], &[1], classes(vec![0, 3, 1], 3)) {
        Err(ModelsError::Config(msg)) => assert!(msg.contains("class 3 is not below 3"), "{msg}"),
        other => panic!("expected a config error, got {other:?}"),
    }
    match InMemoryDataset::new(vec![0.0; 7], &[2, 2], classes(vec![0, 1], 2)) {
        Err(ModelsError::Config(msg)) => assert!(
            msg.contains("7 feature values do not make 2 samples of shape [2, 2]"),
            "{msg}"
        ),
        other => panic!("expected a config error, got {other:?}"),
    }
    match InMemoryDataset::new(vec![0.0; 4], &[2], Labels::Values(vec![1.0; 3])) {
        Err(ModelsError::Config(msg)) => assert!(msg.contains("do not make 3 samples"), "{msg}"),
        other => panic!("expected a config error, got {other:?}"),
    }
    // The good cases.
    let d = InMemoryDataset::new(vec![1.0; 4], &[2], classes(vec![0, 1], 2)).unwrap();
    assert_eq!(
        (d.len(), d.sample_shape(), d.classes()),
        (2, &[2][..], Some(2))
    );
    let r = InMemoryDataset::new(vec![1.0; 4], &[2], Labels::Values(vec![0.5, 1.5])).unwrap();
    assert_eq!(r.classes(), None);
    let mut out = [0.0; 2];
    assert_eq!(r.read(1, &mut out), Label::Value(1.5));
}

/// `Scattering2d` equals Kymatio 0.3's `Scattering2D` (the fixture of
/// `tests/fixtures/scattering.py`): MNIST digits at J = 2, L = 8, and random images of
/// another shape, an odd L and J = 3.
#[test]
fn the_scattering_transform_matches_kymatio() {
    use strata_models::data::Scattering2d;
    use strata_tensor::Tensor;
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/scattering.json"),
    )
    .unwrap();
    let fixture: serde_json::Value = serde_json::from_str(&text).unwrap();
    let numbers = |v: &serde_json::Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let sizes =
        |v: &serde_json::Value| -> Vec<usize> { numbers(v).iter().map(|&x| x as usize).collect() };
    for case in fixture["cases"].as_array().unwrap() {
        let (j, l) = (
            case["J"].as_u64().unwrap() as usize,
            case["L"].as_u64().unwrap() as usize,
        );
        let shape = sizes(&case["shape"]);
        let input: Vec<f32> = numbers(&case["input"]).iter().map(|&v| v as f32).collect();
        let s = Scattering2d::new(j, l, [shape[1], shape[2]]).unwrap();
        let out = s
            .transform(&Tensor::from_vec(input, &shape).unwrap())
            .unwrap();
        assert_eq!(out.shape(), sizes(&case["output_shape"]).as_slice());
        let want = numbers(&case["output"]);
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (i, (&a, &e)) in out.to_vec().iter().zip(&want).enumerate() {
            assert!(
                (a as f64 - e).abs() <= 1e-4 * scale + 1e-4 * e.abs(),
                "J = {j}, L = {l}: coefficient {i}: strata {a}, Kymatio {e}"
            );
        }
    }
}
