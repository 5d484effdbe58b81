//! A weights file is untrusted input: 1,200 seeded mutants of a real `.pth` (torch.save) and a
//! real safetensors file — truncated, bit-flipped, with edited headers, pickles and zip
//! directories — are each loaded from their bytes. Every one either loads or is a clear error;
//! none panics, none takes more than a second, and none allocates more than a few times its
//! own size (a counting allocator measures each load's peak).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use candle_core::Device;
use resnet_core::{Model, WeightsError};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)).expect(rel)
}

/// Where the interesting bytes are: a .pth's pickle (after its first local header) and its
/// zip directory (the end), a safetensors file's JSON header (the start).
fn mutate(rng: &mut Rng, original: &[u8], structure: std::ops::Range<usize>) -> Vec<u8> {
    let mut b = original.to_vec();
    match rng.below(5) {
        0 => b.truncate(rng.below(b.len())),
        1 | 2 => {
            for _ in 0..1 + rng.below(8) {
                let at = match rng.below(3) {
                    0 => rng.below(b.len()),
                    _ => structure.start + rng.below(structure.len()),
                };
                b[at] ^= 1 << rng.below(8);
            }
        }
        3 => {
            // A byte set to a value that matters to a parser: 0, 0xff, a quote, a digit, a
            // pickle opcode.
            let at = structure.start + rng.below(structure.len());
            b[at] = [0, 0xff, b'"', b'9', b'X', b'(', b'h', 0x8a, b'.'][rng.below(9)];
        }
        _ => {
            // A run of bytes copied from elsewhere (sizes and offsets that are real numbers).
            let (from, to, n) =
                (rng.below(b.len()), structure.start + rng.below(structure.len()), 1 + rng.below(16));
            let chunk: Vec<u8> = b[from..(from + n).min(b.len())].to_vec();
            let end = (to + chunk.len()).min(b.len());
            b[to..end].copy_from_slice(&chunk[..end - to]);
        }
    }
    b
}

#[test]
fn a_thousand_mutants_give_no_panic_no_hang_and_no_blow_up() {
    // Candle captures a backtrace per error where RUST_BACKTRACE is set: ~100 MB of symbols,
    // the environment's cost, not the file's (the CLI turns them off the same way).
    std::env::set_var("RUST_LIB_BACKTRACE", "0");
    let pth = read("tests/fixtures/resnet20.pth");
    let checkpoint = read("tests/fixtures/lenet5-checkpoint.pth");
    let st = read("../../www/weights/cifar10-resnet20.safetensors");
    let st_header = 8 + u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
    let sources: [(&str, &[u8], std::ops::Range<usize>); 5] = [
        ("resnet20.pth pickle", &pth, 0..14_100),
        ("resnet20.pth directory", &pth, pth.len() - 6_000..pth.len()),
        ("lenet5-checkpoint.pth", &checkpoint, 0..checkpoint.len()),
        ("safetensors header", &st, 0..st_header),
        ("safetensors anywhere", &st, 0..st.len()),
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut loaded, mut errors, mut slowest, mut worst_ratio) = (0, 0, Duration::ZERO, 0f64);
    for i in 0..1200 {
        let (what, original, structure) = &sources[i % sources.len()];
        let b = mutate(&mut rng, original, structure.clone());
        let before = LIVE.load(Relaxed);
        PEAK.store(before, Relaxed);
        let t0 = Instant::now();
        let result = Model::load_recognised(&b, &Device::Cpu);
        let took = t0.elapsed();
        let peak = PEAK.load(Relaxed) - before;
        match result {
            Ok(_) => loaded += 1,
            Err(e) => {
                errors += 1;
                let msg = e.to_string();
                assert!(!msg.is_empty(), "mutant {i} ({what}): an empty error");
                if let WeightsError::Format(m) = &e {
                    assert!(m.len() < 600, "mutant {i} ({what}): an unreadable error: {m}");
                }
            }
        }
        slowest = slowest.max(took);
        assert!(took < Duration::from_secs(1), "mutant {i} ({what}) took {took:?}");
        // The model itself takes the file's size again (f32); the pickle's objects a bounded
        // multiple of the pickle (see pth::check_pickle).
        let bound = 6 * b.len() + (16 << 20);
        worst_ratio = worst_ratio.max(peak as f64 / b.len().max(1) as f64);
        assert!(peak <= bound, "mutant {i} ({what}): {peak} bytes allocated for a {}-byte file", b.len());
    }
    eprintln!(
        "1200 mutants: {loaded} loaded, {errors} clear errors; slowest {slowest:?}; peak allocation at most \
         {worst_ratio:.1}× the file"
    );
    assert!(errors > 600, "most mutants are broken files: {errors} errors");
}
