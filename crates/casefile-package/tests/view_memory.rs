//! The viewer's memory does not grow with the file: a ~50 MB CSV in a real package (on
//! disk, written by the real writer) gets sorted and filtered pages and a text search
//! while the bytes this process has allocated stay within a few MB of where they were.
//! A resource bound, counted by the allocator below (its own test binary, so no other
//! test allocates meanwhile).
#![allow(unsafe_code)] // the counting allocator: GlobalAlloc is an unsafe trait

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use casefile_package::view::{ColumnFilter, CsvQuery, MAX_SORT_WINDOW, Package, SortBy};
use casefile_package::writer::PackageMeta;
use casefile_package::{ItemOutcome, ItemSink, PackageWriter};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = CURRENT.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: every call is passed to the system allocator unchanged; only sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the peak growth of allocated bytes during it.
fn peak_growth<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = CURRENT.load(Relaxed);
    PEAK.store(base, Relaxed);
    let out = f();
    (out, PEAK.load(Relaxed).saturating_sub(base))
}

const TARGET_BYTES: usize = 50 << 20;
const MIB: usize = 1 << 20;

#[test]
fn a_50_mb_csv_is_paged_sorted_filtered_and_searched_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("package.zip");
    let mut writer = PackageWriter::new(std::fs::File::create(&path).unwrap(), PackageMeta::detached("memory"));
    writer.begin_collector("processes", "Processes");
    let mut rows = 0u64;
    let sink: &mut dyn ItemSink = &mut writer;
    sink.file("processes.csv", "generated", |w| {
        let mut w = std::io::BufWriter::new(w);
        let mut written = 0usize;
        w.write_all(b"pid,host,user,rss_kb,command\n")?;
        while written < TARGET_BYTES {
            rows += 1;
            let i = rows;
            let line = format!(
                "{i},host-{},user-{},{},\"/usr/bin/worker --id {i} --note \"\"quoted, with comma\"\"\"\n",
                i % 97,
                i % 13,
                (i * 7919) % 1_000_003
            );
            w.write_all(line.as_bytes())?;
            written += line.len();
        }
        w.flush()?;
        Ok(ItemOutcome::ok())
    })
    .unwrap();
    writer.end_collector(None);
    writer.finish().unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() < (TARGET_BYTES / 2) as u64, "compressed");

    let mut package = Package::open(std::fs::File::open(&path).unwrap()).unwrap();
    let entry = "Processes/processes.csv";

    let sorted = CsvQuery {
        offset: 200,
        limit: 100,
        sort: Some(SortBy { column: 3, descending: true }),
        filter: Some("HOST-1".to_owned()),
        column_filters: vec![ColumnFilter { column: 2, contains: "user-1".to_owned() }],
    };
    let (page, growth) = peak_growth(|| package.csv_page(entry, &sorted).unwrap());
    assert_eq!(page.total_rows, rows);
    assert!(page.matched > 10_000, "{}", page.matched);
    assert_eq!(page.rows.len(), 100);
    let rss: Vec<u64> = page.rows.iter().map(|r| r.cells[3].parse().unwrap()).collect();
    assert!(rss.windows(2).all(|w| w[0] >= w[1]), "descending numerically");
    println!("rows {rows}; sorted filtered page: peak growth {growth} bytes");
    assert!(growth < 4 * MIB, "a sorted, filtered page of a 50 MB CSV allocated {growth} bytes at its peak");

    let (page, growth) =
        peak_growth(|| package.csv_page(entry, &CsvQuery { limit: 500, ..CsvQuery::default() }).unwrap());
    assert_eq!((page.rows.len(), page.matched), (500, rows));
    println!("first page: {growth}");
    assert!(growth < 4 * MIB, "the first page allocated {growth} bytes at its peak");

    let (found, growth) = peak_growth(|| package.text_search(entry, "--id 39999 ", 1000, 1).unwrap());
    assert_eq!(found.hits.iter().map(|h| h.number).collect::<Vec<_>>(), [40_000], "line 1 is the header");
    assert_eq!(found.scanned_lines, rows + 1);
    println!("search: {growth}");
    assert!(growth < 4 * MIB, "a search allocated {growth} bytes at its peak");

    let (page, growth) = peak_growth(|| package.text_page(entry, rows - 10, 1000).unwrap());
    assert_eq!((page.lines.len(), page.total_lines), (12, Some(rows + 1)));
    println!("last text page: {growth}");
    assert!(growth < 4 * MIB, "the last text page allocated {growth} bytes at its peak");

    // The widest sorted window holds MAX_SORT_WINDOW keys: bounded by the window, not by
    // the file (numbers here; a text key takes at most MAX_SORT_KEY_BYTES more).
    let far = CsvQuery {
        offset: MAX_SORT_WINDOW - 100,
        limit: 100,
        sort: Some(SortBy { column: 0, descending: false }),
        ..CsvQuery::default()
    };
    let (page, growth) = peak_growth(|| package.csv_page(entry, &far).unwrap());
    assert_eq!(page.rows.first().map(|r| r.number), Some(MAX_SORT_WINDOW - 99));
    println!("widest sorted window: {growth}");
    assert!(growth < 16 * MIB, "the widest sorted window allocated {growth} bytes at its peak");
}
