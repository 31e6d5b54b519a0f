//! Batching: every unit exactly once per epoch, masks and padding consistent, seeded order.

use lpeft_data::batch::{Batch, BatchConfig, BatchLabels, Batcher, Padding};
use lpeft_data::{Labels, SplitTensors};
use lpeft_schema::dataset::TaskKind;
use proptest::prelude::*;

/// A split with the given row lengths; groups of `per_group` consecutive rows.
fn split(lengths: &[usize], per_group: usize) -> SplitTensors {
    let mut t = SplitTensors {
        input_ids: Vec::new(),
        type_ids: Vec::new(),
        offsets: vec![0],
        group_ids: Vec::new(),
        example_ids: Vec::new(),
        labels: Labels::None,
        token_spans: None,
        num_truncated: 0,
    };
    for (r, &len) in lengths.iter().enumerate() {
        for j in 0..len {
            // Token ids encode (row, position) and are never the pad id 0.
            t.input_ids.push((r * 1000 + j + 1) as u32);
            t.type_ids.push((j >= len / 2) as u8);
        }
        t.offsets.push(t.input_ids.len() as u64);
        t.group_ids.push((r / per_group) as u32);
    }
    let groups = lengths.len() / per_group;
    t.example_ids = (0..groups as u32).collect();
    t.labels = if per_group == 1 {
        Labels::Class((0..lengths.len() as i64).map(|r| r % 3).collect())
    } else {
        Labels::Class((0..groups as i64).map(|g| g % per_group as i64).collect())
    };
    t
}

fn check_batch(t: &SplitTensors, b: &Batch, pad_id: u32) {
    assert_eq!(b.input_ids.len(), b.rows * b.seq_len);
    assert_eq!(b.type_ids.len(), b.rows * b.seq_len);
    assert_eq!(b.attention_mask.len(), b.rows * b.seq_len);
    assert_eq!(b.row_indices.len(), b.rows);
    for (i, &r) in b.row_indices.iter().enumerate() {
        let row = t.row(r);
        let cells = i * b.seq_len..(i + 1) * b.seq_len;
        let mask = &b.attention_mask[cells.clone()];
        let ids = &b.input_ids[cells.clone()];
        // The mask is 1 exactly over the row's tokens, which come first and unchanged.
        assert_eq!(mask.iter().sum::<i64>() as usize, row.len());
        assert!(mask[..row.len()].iter().all(|&m| m == 1));
        for (j, tok) in row.clone().enumerate() {
            assert_eq!(ids[j], t.input_ids[tok] as i64);
            assert_eq!(b.type_ids[cells.start + j], t.type_ids[tok] as i64);
        }
        assert!(ids[row.len()..].iter().all(|&x| x == pad_id as i64));
        assert!(
            b.type_ids[cells.start + row.len()..cells.end]
                .iter()
                .all(|&x| x == 0)
        );
    }
}

fn cfg(batch_size: usize, seed: u64, drop_last: bool, padding: Padding) -> BatchConfig {
    BatchConfig {
        batch_size,
        shuffle: true,
        seed,
        drop_last,
        padding,
        pad_id: 7,
    }
}

proptest! {
    #[test]
    fn every_row_once_per_epoch(
        lengths in proptest::collection::vec(1usize..40, 1..120),
        batch_size in 1usize..17,
        seed in any::<u64>(),
        epoch in 0u64..4,
        drop_last in any::<bool>(),
        fixed in any::<bool>(),
    ) {
        let t = split(&lengths, 1);
        let padding = if fixed { Padding::Fixed(40) } else { Padding::Longest };
        let batcher = Batcher::new(&t, &TaskKind::Classification { num_labels: 3 }, cfg(batch_size, seed, drop_last, padding)).unwrap();
        let batches: Vec<Batch> = batcher.epoch(epoch).collect();
        prop_assert_eq!(batches.len(), batcher.num_batches());
        let mut seen = vec![0usize; lengths.len()];
        for b in &batches {
            check_batch(&t, b, 7);
            if fixed {
                prop_assert_eq!(b.seq_len, 40);
            } else {
                prop_assert_eq!(b.seq_len, b.row_indices.iter().map(|&r| lengths[r]).max().unwrap());
            }
            prop_assert!(b.batch_size <= batch_size);
            if drop_last { prop_assert_eq!(b.batch_size, batch_size); }
            let BatchLabels::Class(l) = &b.labels else { panic!("labels") };
            for (k, &r) in b.row_indices.iter().enumerate() {
                prop_assert_eq!(l[k], r as i64 % 3);
                seen[r] += 1;
            }
        }
        let covered = seen.iter().filter(|&&n| n == 1).count();
        prop_assert!(seen.iter().all(|&n| n <= 1));
        if drop_last {
            prop_assert_eq!(covered, lengths.len() / batch_size * batch_size);
        } else {
            prop_assert_eq!(covered, lengths.len());
        }
        // Same seed and epoch, same order.
        prop_assert_eq!(batcher.order(epoch), batcher.order(epoch));
    }

    #[test]
    fn choices_stay_together(
        groups in 1usize..30,
        batch_size in 1usize..8,
        seed in any::<u64>(),
    ) {
        let lengths: Vec<usize> = (0..groups * 2).map(|r| 3 + r % 5).collect();
        let t = split(&lengths, 2);
        let batcher = Batcher::new(&t, &TaskKind::MultipleChoice { num_choices: 2 }, cfg(batch_size, seed, false, Padding::Longest)).unwrap();
        let mut seen = vec![0usize; groups];
        for b in batcher.epoch(0) {
            check_batch(&t, &b, 7);
            prop_assert_eq!(b.rows, 2 * b.batch_size);
            prop_assert_eq!(b.num_choices, Some(2));
            let BatchLabels::Class(l) = &b.labels else { panic!("labels") };
            prop_assert_eq!(l.len(), b.batch_size);
            for (k, &g) in b.group_indices.iter().enumerate() {
                prop_assert_eq!(&b.row_indices[2 * k..2 * k + 2], &[2 * g, 2 * g + 1]);
                prop_assert_eq!(l[k], g as i64 % 2);
                seen[g] += 1;
            }
        }
        prop_assert!(seen.iter().all(|&n| n == 1));
    }
}

#[test]
fn shuffle_depends_on_seed_and_epoch_and_eval_keeps_order() {
    let t = split(&[5; 50], 1);
    let kind = TaskKind::Classification { num_labels: 3 };
    let a = Batcher::new(&t, &kind, cfg(8, 1, false, Padding::Longest)).unwrap();
    let b = Batcher::new(&t, &kind, cfg(8, 2, false, Padding::Longest)).unwrap();
    assert_ne!(a.order(0), a.order(1));
    assert_ne!(a.order(0), b.order(0));
    let mut eval = cfg(8, 1, false, Padding::Longest);
    eval.shuffle = false;
    let e = Batcher::new(&t, &kind, eval).unwrap();
    assert_eq!(e.order(3), (0..50).collect::<Vec<_>>());
}

#[test]
fn fixed_padding_shorter_than_a_row_is_refused() {
    let t = split(&[5, 30], 1);
    let err = Batcher::new(
        &t,
        &TaskKind::Classification { num_labels: 3 },
        cfg(2, 0, false, Padding::Fixed(16)),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("shorter than the longest row (30 tokens)"),
        "{err}"
    );
}
