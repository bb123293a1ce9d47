//! The delivery loop with an in-memory sink (a test double of the [`Sink`] trait, not of a
//! server): failures are retried, ranges are contiguous, an interrupted range is redelivered
//! as it was.

use std::sync::{Arc, Mutex};

use super::*;
use crate::output::Document;
use crate::state::RocksState;

#[derive(Clone, Default)]
struct Recorder {
    writes: Arc<Mutex<Vec<(Range, usize)>>>,
    fail_first: Arc<Mutex<u32>>,
}

impl Sink for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }

    fn batching(&self) -> Batching {
        Batching {
            max_bytes: 200,
            max_interval: Duration::from_millis(20),
        }
    }

    async fn write(&mut self, range: Range, records: Vec<OutputRecord>) -> Result<(), SinkError> {
        {
            let mut f = self.fail_first.lock().unwrap();
            if *f > 0 {
                *f -= 1;
                return Err(SinkError::Write("injected".into()));
            }
        }
        self.writes.lock().unwrap().push((range, records.len()));
        Ok(())
    }
}

fn doc(i: u64) -> Vec<u8> {
    OutputRecord::Document(Document {
        id: i.to_string(),
        day: "2020-01-01".into(),
        json: format!("{{\"n\":{i}}}").into_bytes(),
    })
    .encode()
    .unwrap()
}

#[tokio::test]
async fn delivers_every_committed_entry_once_in_contiguous_ranges_despite_failures() {
    let mut state = RocksState::temporary(false);
    for i in 0..50 {
        state.push_output(&doc(i)).unwrap();
    }
    state.commit(&Default::default()).unwrap();
    let (committed_tx, committed_rx) = watch::channel(state.outbox_next());
    let (cursor_tx, mut cursor_rx) = watch::channel(0);
    let (stop_tx, stop_rx) = watch::channel(Drain::Normal);
    let sink = Recorder::default();
    *sink.fail_first.lock().unwrap() = 2;
    let report = crate::report::Report::default();
    let task = tokio::spawn(run(
        sink.clone(),
        state.outbox_reader(),
        committed_rx,
        cursor_tx,
        Metrics::unregistered(),
        report.clone(),
        stop_rx,
    ));
    // More entries while the sink runs.
    for i in 50..80 {
        state.push_output(&doc(i)).unwrap();
    }
    state.commit(&Default::default()).unwrap();
    committed_tx.send_replace(state.outbox_next());
    while *cursor_rx.borrow_and_update() < 80 {
        cursor_rx.changed().await.unwrap();
    }
    stop_tx.send_replace(Drain::Stop);
    task.await.unwrap().unwrap();
    let writes = sink.writes.lock().unwrap().clone();
    assert!(writes.len() > 1, "max_bytes splits the ranges: {writes:?}");
    let mut next = 0;
    for (range, n) in &writes {
        assert_eq!(range.first, next, "{writes:?}");
        assert_eq!(*n as u64, range.last - range.first + 1);
        next = range.last + 1;
    }
    assert_eq!(next, 80);
    // Two failed attempts, then a success: healthy again, and listed.
    let sinks = report.snapshot(Default::default()).sinks;
    assert_eq!(sinks.len(), 1);
    assert_eq!(
        (sinks[0].name.as_str(), sinks[0].healthy),
        ("recorder", true)
    );
    let cursor = state.outbox_reader().cursor("recorder").unwrap().unwrap();
    assert_eq!(
        cursor,
        SinkCursor {
            next: 80,
            intent: None
        }
    );
}

#[tokio::test]
async fn an_interrupted_range_is_written_again_as_it_was() {
    let mut state = RocksState::temporary(false);
    for i in 0..30 {
        state.push_output(&doc(i)).unwrap();
    }
    state.commit(&Default::default()).unwrap();
    let reader = state.outbox_reader();
    reader
        .set_cursor(
            "recorder",
            &SinkCursor {
                next: 10,
                intent: Some((10, 13)),
            },
        )
        .unwrap();
    let (_committed_tx, committed_rx) = watch::channel(state.outbox_next());
    let (cursor_tx, _cursor_rx) = watch::channel(0);
    let (_stop_tx, stop_rx) = watch::channel(Drain::Stop);
    let sink = Recorder::default();
    run(
        sink.clone(),
        reader,
        committed_rx,
        cursor_tx,
        Metrics::unregistered(),
        crate::report::Report::default(),
        stop_rx,
    )
    .await
    .unwrap();
    let writes = sink.writes.lock().unwrap().clone();
    assert_eq!(
        writes[0],
        (
            Range {
                first: 10,
                last: 13
            },
            4
        )
    );
    assert_eq!(writes.last().unwrap().0.last, 29);
    assert_eq!(writes[1].0.first, 14);
}
