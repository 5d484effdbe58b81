//! A forward pass's threads as one team. In the browser's threaded build a parallel section
//! handed to rayon costs Web Worker wake-ups (a pool thread's, then the caller's, blocked in
//! `Atomics.wait`), tens of microseconds each: more than a small conv's half (ResNet-20's convs
//! split that way made its forward 2× slower on 2 threads). Inside [`run`], the calling thread
//! leads the pass while the pool's other threads spin waiting for sections for as long as it
//! lasts; [`super::for_each_mut`] on the leader hands out its items through one atomic word, and
//! a section costs no wake-up at all. The helpers spin only while a pass runs (through the
//! leader's serial parts too, as onnxruntime-web's pool does) and sleep in rayon between passes.
//!
//! After a pass a helper lingers, spinning, for [`LINGER_SPINS`] polls of its leader's
//! [`Hub`]: a pass that starts meanwhile (the next of a batch of passes, a camera's next frame)
//! finds it ready, where a helper spawned anew costs a Web Worker wake-up at the start of every
//! pass (onnxruntime-web's pool spins between runs likewise).
//!
//! Natively too: a rayon section costs a futex wake-up and a join, which ResNet-20's ~50 µs convs
//! cannot repay (they ran on one thread, and 2 threads were no faster than 1), and gemm's own
//! split of a product was idle half the time on ResNet-18. In a team its convs split (ResNet-20
//! on 2 threads ~0.7 ms against ~1.0 on one; ResNet-18's Winograd convs 1.7–1.9× faster on 2,
//! against 1.3–1.6× through rayon). Off in a wasm build without threads, where there is no pool.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Whether [`run`] forms a team in this build.
const ENABLED: bool = cfg!(any(not(target_arch = "wasm32"), target_feature = "atomics"));

/// Polls of its hub a helper makes after a pass before it goes back to rayon's sleep: a few
/// milliseconds. A poll is an atomic load in wasm (whose spin hint is a no-op); natively it waits
/// out a `pause` instruction too (tens of cycles on AMD, ~140 on recent Intel), so fewer polls
/// last as long there.
const LINGER_SPINS: usize = if cfg!(target_arch = "wasm32") { 1 << 21 } else { 1 << 16 };

/// Where a leader's passes meet the helpers that linger after one.
#[derive(Default)]
struct Hub {
    /// The number of the latest pass (its team's `generation`).
    generation: AtomicU64,
    /// The latest pass's team.
    next: Mutex<Option<Arc<Team>>>,
    /// Helpers lingering now: the leader spawns only as many more as its team lacks.
    lingering: AtomicUsize,
    /// Helpers spawned, ever (the tests count them).
    spawned: AtomicUsize,
}

impl Hub {
    /// A helper's life: help `team`'s pass, then linger for the next one, and so on, until no
    /// pass comes for [`LINGER_SPINS`] polls.
    fn serve(&self, mut team: Arc<Team>) {
        loop {
            if team.join() {
                team.help();
            }
            let served = team.generation;
            drop(team);
            self.lingering.fetch_add(1, Ordering::SeqCst);
            let mut next = None;
            for _ in 0..LINGER_SPINS {
                if self.generation.load(Ordering::SeqCst) != served {
                    next = self.latest();
                    break;
                }
                std::hint::spin_loop();
            }
            self.lingering.fetch_sub(1, Ordering::SeqCst);
            // A pass that started just as this helper gave up did not count it: look once more.
            if next.is_none() && self.generation.load(Ordering::SeqCst) != served {
                next = self.latest();
            }
            match next {
                Some(t) => team = t,
                None => return,
            }
        }
    }

    fn latest(&self) -> Option<Arc<Team>> {
        self.next.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

thread_local! {
    /// The hub of the passes this thread leads.
    static HUB: Arc<Hub> = Arc::default();
    /// The team this thread leads, while its pass runs.
    static LEADING: Cell<*const Team> = const { Cell::new(std::ptr::null()) };
    /// Set while this thread runs an item of a section (no nested sections).
    static IN_ITEM: Cell<bool> = const { Cell::new(false) };
}

/// The state word: the section's epoch (24 bits), the next item to claim (20) and the item
/// count (20). One compare-and-swap claims an item and proves its section still in progress.
const IDX_BITS: u32 = 20;
const MAX_ITEMS: usize = (1 << IDX_BITS) - 1;

fn pack(epoch: u64, next: usize, len: usize) -> u64 {
    (epoch << (2 * IDX_BITS)) | ((next as u64) << IDX_BITS) | len as u64
}

fn unpack(s: u64) -> (u64, usize, usize) {
    let mask = (1u64 << IDX_BITS) - 1;
    (s >> (2 * IDX_BITS), ((s >> IDX_BITS) & mask) as usize, (s & mask) as usize)
}

/// One parallel section: `item(i)` for every `i` below the state word's count.
struct Section<'a> {
    item: &'a (dyn Fn(usize) + Sync),
}

struct Team {
    threads: usize,
    /// Its pass's number in its leader's [`Hub`].
    generation: u64,
    /// Helpers that joined: at most `threads − 1` help.
    joined: AtomicUsize,
    state: AtomicU64,
    /// The current section (on the leader's stack; valid while its items are unfinished).
    section: AtomicPtr<Section<'static>>,
    done: AtomicUsize,
    /// False once the pass is over: the helpers leave.
    active: AtomicBool,
}

impl Team {
    /// Takes a helper's place in the team; false if all are taken.
    fn join(&self) -> bool {
        self.joined.fetch_add(1, Ordering::SeqCst) < self.threads - 1
    }

    /// Claims and runs items of the current section until none is left; true if it ran any.
    fn work(&self) -> bool {
        let mut ran = false;
        loop {
            let s = self.state.load(Ordering::Acquire);
            let (epoch, next, len) = unpack(s);
            if next >= len {
                return ran;
            }
            let section = self.section.load(Ordering::Acquire);
            if self
                .state
                .compare_exchange_weak(s, pack(epoch, next + 1, len), Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            // SAFETY: the claim succeeded on `epoch`'s word, so item `next` of that section was
            // unclaimed and the leader cannot have finished the section (it waits for every
            // item); it publishes a section's pointer before its word, so `section` is that
            // section's, alive on the leader's stack until `done` counts this item.
            let item = unsafe { (*section).item };
            let _count = Done(&self.done);
            IN_ITEM.with(|f| f.set(true));
            item(next);
            ran = true;
        }
    }

    /// A helper's life: run whatever items come until the pass is over.
    fn help(&self) {
        while self.active.load(Ordering::Acquire) {
            if !self.work() {
                std::hint::spin_loop();
            }
        }
    }

    /// The leader's side of a section: publish it, work on it, wait for the helpers' items.
    fn section(&self, len: usize, item: &(dyn Fn(usize) + Sync)) {
        let section = Section { item };
        let (epoch, _, _) = unpack(self.state.load(Ordering::Relaxed));
        self.done.store(0, Ordering::Relaxed);
        // SAFETY (of the lifetime): the pointer is used only for claims of this epoch, all of
        // which end before this function returns (the wait below).
        let ptr = &section as *const Section as *mut Section<'static>;
        self.section.store(ptr, Ordering::Release);
        self.state.store(pack((epoch + 1) & ((1 << 24) - 1), 0, len), Ordering::Release);
        self.work();
        while self.done.load(Ordering::Acquire) < len {
            std::hint::spin_loop();
        }
    }
}

/// Counts an item done when dropped, so a panicking item cannot leave the leader waiting.
struct Done<'a>(&'a AtomicUsize);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        IN_ITEM.with(|f| f.set(false));
        self.0.fetch_add(1, Ordering::Release);
    }
}

/// Ends the pass when dropped (a panicking pass too): the helpers leave their loop.
struct Active<'a>(&'a AtomicBool);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        LEADING.with(|l| l.set(std::ptr::null()));
        self.0.store(false, Ordering::Release);
    }
}

/// Runs `pass` (a forward pass) with the pool's threads as a team where this build forms one
/// (a threaded wasm build), else simply runs it.
pub(crate) fn run<R>(pass: impl FnOnce() -> R) -> R {
    match ENABLED {
        true => run_team(pass),
        false => pass(),
    }
}

/// [`run`] with a team whatever the build: this thread leads, and as many of the pool's threads
/// help as make one thread per pool thread in all (the leader is the page's worker, outside the
/// pool, in the browser). Inside a team, or in an item, or with one thread, `pass` runs as it is.
pub(crate) fn run_team<R>(pass: impl FnOnce() -> R) -> R {
    let threads = rayon::current_num_threads();
    if threads < 2 || leading().is_some() || inside_item() {
        return pass();
    }
    let hub = HUB.with(Arc::clone);
    let generation = hub.generation.load(Ordering::SeqCst) + 1;
    let team = Arc::new(Team {
        threads,
        generation,
        joined: AtomicUsize::new(0),
        state: AtomicU64::new(0),
        section: AtomicPtr::new(std::ptr::null_mut()),
        done: AtomicUsize::new(0),
        active: AtomicBool::new(true),
    });
    *hub.next.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&team));
    hub.generation.store(generation, Ordering::SeqCst);
    // Published first, counted after: a helper that stops lingering in between sees the new
    // pass on its way out (`Hub::serve`), and a surplus one finds the team full.
    let lingering = hub.lingering.load(Ordering::SeqCst);
    // Not a scope: the pass does not wait for a helper that starts late (it finds the pass over
    // and lingers); a helper touches a section only through a claim, and none is open after it.
    for _ in lingering + 1..threads {
        let (hub, team) = (Arc::clone(&hub), Arc::clone(&team));
        hub.spawned.fetch_add(1, Ordering::SeqCst);
        rayon::spawn(move || hub.serve(team));
    }
    let _end = Active(&team.active);
    LEADING.with(|l| l.set(Arc::as_ptr(&team)));
    pass()
}

fn leading() -> Option<&'static Team> {
    let p = LEADING.with(|l| l.get());
    // SAFETY: set only while `run_team` holds the team's Arc, reset before it drops it.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// Whether this thread runs an item of a team's section (where nothing splits further).
pub(crate) fn inside_item() -> bool {
    IN_ITEM.with(|f| f.get())
}

/// The threads of the team this thread leads (outside an item), if it leads one.
pub(crate) fn team_threads() -> Option<usize> {
    leading().filter(|_| !inside_item()).map(|t| t.threads)
}

/// How a section's items go to its threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Claims {
    /// One claim per thread's share of the items: for many small items, where a claim (which
    /// moves the state word's cache line between cores) costs as much as an item.
    Shares,
    /// One claim per item: for a few big items each worth a claim, so that a thread that runs
    /// slower (its input in the other core's cache, its core shared with the browser's threads)
    /// takes fewer and the others do not wait for it.
    Items,
}

/// `f(i, item)` for every item, on the team this thread leads; false (nothing run) if it leads
/// none or there are too many items for the state word.
pub(crate) fn for_each_mut<T: Send>(
    items: &mut [T],
    claims: Claims,
    f: &(impl Fn(usize, &mut T) + Sync),
) -> bool {
    let Some(team) = leading().filter(|_| !inside_item()) else { return false };
    if items.len() > MAX_ITEMS {
        return false;
    }
    struct Items<T>(*mut T);
    // SAFETY: each index is claimed by exactly one thread (the state word's claims), so the
    // `&mut` each item call makes never aliases another; `T: Send` lets it cross threads.
    unsafe impl<T: Send> Sync for Items<T> {}
    let base = Items(items.as_mut_ptr());
    let base = &base;
    let len = items.len();
    let units = match claims {
        Claims::Shares => len.min(team.threads),
        Claims::Items => len,
    };
    team.section(units, &|u| {
        for i in u * len / units..(u + 1) * len / units {
            // SAFETY: unit `u`'s items are its alone (see `Items`).
            f(i, unsafe { &mut *base.0.add(i) })
        }
    });
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap()
    }

    #[test]
    fn every_item_once_across_many_sections() {
        // Both ways of claiming, alternately.
        pool(3).install(|| {
            let total = run_team(|| {
                assert_eq!(team_threads(), Some(3));
                let mut sum = 0u64;
                for round in 0..2000usize {
                    let mut items: Vec<u64> = (0..(round % 17) as u64).collect();
                    let seen = AtomicUsize::new(0);
                    let claims = if round % 2 == 0 { Claims::Shares } else { Claims::Items };
                    assert!(for_each_mut(&mut items, claims, &|i, v: &mut u64| {
                        assert_eq!(*v, i as u64);
                        assert!(inside_item() && team_threads().is_none(), "no nesting in an item");
                        // A nested section in an item runs nothing on the team.
                        assert!(!for_each_mut(&mut [0u8; 2], Claims::Items, &|_, _| ()));
                        *v = 10 * *v + 1;
                        seen.fetch_add(1, Ordering::Relaxed);
                    }));
                    assert_eq!(seen.load(Ordering::Relaxed), items.len());
                    assert!(items.iter().enumerate().all(|(i, &v)| v == 10 * i as u64 + 1));
                    sum += items.iter().sum::<u64>();
                }
                sum
            });
            let want: u64 = (0..2000u64).map(|r| (0..r % 17).map(|i| 10 * i + 1).sum::<u64>()).sum();
            assert_eq!(total, want);
            assert_eq!(team_threads(), None, "the team ends with its pass");
            assert!(
                !for_each_mut(&mut [1, 2], Claims::Shares, &|_, _: &mut i32| ()),
                "no team outside a pass"
            );
        });
    }

    #[test]
    fn items_run_on_several_threads() {
        pool(2).install(|| {
            // A busy machine may leave the helper unscheduled for one section, not for fifty.
            let most = run_team(|| {
                (0..50)
                    .map(|_| {
                        let mut ids = vec![usize::MAX; 64];
                        for_each_mut(&mut ids, Claims::Shares, &|_, id: &mut usize| {
                            // Long enough that the helper claims its unit.
                            std::thread::sleep(std::time::Duration::from_micros(200));
                            *id = rayon::current_thread_index().unwrap();
                        });
                        ids.sort();
                        ids.dedup();
                        ids.len()
                    })
                    .max()
                    .unwrap()
            });
            assert_eq!(most, 2);
        });
    }

    /// Whole forward passes on a team against the same passes outside one: its lower split bound
    /// divides every conv kind (Winograd blocks and within, im2col bands, 1×1 convs by output
    /// channels), and a batch goes whole images to each thread.
    #[test]
    fn a_team_pass_computes_what_a_plain_one_does() {
        use crate::{find_arch, Model};
        use candle_core::{Device, Tensor};
        let dev = Device::Cpu;
        for (name, batch) in [("cifar-resnet20", 1), ("cifar-resnet20", 3), ("resnet18", 1), ("resnet50", 1)]
        {
            let model = Model::random(find_arch(name).unwrap(), 7, &dev).unwrap();
            let s = model.graph.input;
            let x = Tensor::randn(0f32, 1.0, (batch, s.c, s.h, s.w), &dev).unwrap();
            // Outside a team: a pool of one thread forms none.
            let plain = pool(1).install(|| model.forward(&x)).unwrap();
            for threads in [2, 3] {
                let teamed = pool(threads).install(|| run_team(|| model.forward(&x).unwrap()));
                let diff = (&teamed - &plain).unwrap().abs().unwrap().flatten_all().unwrap();
                let diff = diff.max(0).unwrap().to_scalar::<f32>().unwrap();
                let scale =
                    plain.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
                assert!(diff <= 1e-4 * scale.max(1.0), "{name} ×{batch} on {threads} threads: off by {diff}");
            }
        }
    }

    /// A pass that follows another within the helpers' lingering spawns none, and its items
    /// still run on both threads.
    #[test]
    fn helpers_linger_for_the_next_pass() {
        pool(2).install(|| {
            let threads_of_a_pass = || {
                run_team(|| {
                    let mut ids = vec![usize::MAX; 8];
                    for_each_mut(&mut ids, Claims::Shares, &|_, id: &mut usize| {
                        std::thread::sleep(std::time::Duration::from_millis(2));
                        *id = rayon::current_thread_index().unwrap();
                    });
                    ids.sort();
                    ids.dedup();
                    ids.len()
                })
            };
            let hub = HUB.with(Arc::clone);
            // A busy machine may leave a helper unscheduled for a pass, not for twenty.
            let mut lingered = false;
            for _ in 0..20 {
                threads_of_a_pass();
                let t0 = std::time::Instant::now();
                while hub.lingering.load(Ordering::SeqCst) == 0 && t0.elapsed().as_millis() < 100 {
                    std::thread::yield_now();
                }
                let spawned = hub.spawned.load(Ordering::SeqCst);
                if hub.lingering.load(Ordering::SeqCst) == 1
                    && threads_of_a_pass() == 2
                    && hub.spawned.load(Ordering::SeqCst) == spawned
                {
                    lingered = true;
                    break;
                }
            }
            assert!(lingered, "no pass found a lingering helper");
        });
    }

    #[test]
    fn one_thread_or_nested_runs_the_pass_as_is() {
        pool(1).install(|| assert_eq!(run_team(team_threads), None));
        pool(2).install(|| run_team(|| assert_eq!(run_team(team_threads), Some(2))));
    }
}
