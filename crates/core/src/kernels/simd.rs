//! Four f32 lanes: wasm32 simd128 in the browser, SSE on x86_64, a plain array elsewhere. The
//! hand-vectorised kernels are written once against this type, or against [`Lanes`] where a
//! kernel also runs 8 (AVX2) or 16 (AVX-512) lanes wide on an x86_64 that has them: the kernel
//! is generic and `#[inline(always)]`, and [`Width::run`] calls it from a function compiled for
//! the wider instructions once the CPU has been seen to have them.

#[cfg(target_arch = "wasm32")]
mod imp {
    use core::arch::wasm32::*;

    #[derive(Clone, Copy)]
    pub struct F32x4(v128);

    impl std::ops::Add for F32x4 {
        type Output = Self;
        #[inline(always)]
        fn add(self, o: Self) -> Self {
            F32x4(f32x4_add(self.0, o.0))
        }
    }

    impl std::ops::Sub for F32x4 {
        type Output = Self;
        #[inline(always)]
        fn sub(self, o: Self) -> Self {
            F32x4(f32x4_sub(self.0, o.0))
        }
    }

    impl std::ops::Mul for F32x4 {
        type Output = Self;
        #[inline(always)]
        fn mul(self, o: Self) -> Self {
            F32x4(f32x4_mul(self.0, o.0))
        }
    }

    impl F32x4 {
        /// The first four elements of `s`.
        #[inline(always)]
        pub fn load(s: &[f32]) -> Self {
            let s = &s[..4];
            // SAFETY: `s` holds four f32s; v128.load has no alignment requirement.
            F32x4(unsafe { v128_load(s.as_ptr() as *const v128) })
        }
        #[inline(always)]
        pub fn store(self, s: &mut [f32]) {
            let s = &mut s[..4];
            // SAFETY: as in `load`.
            unsafe { v128_store(s.as_mut_ptr() as *mut v128, self.0) }
        }
        #[inline(always)]
        pub fn splat(v: f32) -> Self {
            F32x4(f32x4_splat(v))
        }
        /// `self · b + c`: one fused instruction in a relaxed-SIMD build (the page loads one only
        /// where the browser validates it), a multiply and an add otherwise.
        #[inline(always)]
        pub fn mul_add(self, b: Self, c: Self) -> Self {
            #[cfg(target_feature = "relaxed-simd")]
            return F32x4(f32x4_relaxed_madd(self.0, b.0, c.0));
            #[cfg(not(target_feature = "relaxed-simd"))]
            return self * b + c;
        }
        #[inline(always)]
        pub fn relu(self) -> Self {
            F32x4(f32x4_pmax(self.0, f32x4_splat(0.0)))
        }
        /// Lane-wise `if o > self { o } else { self }` (one instruction; no NaN handling).
        #[inline(always)]
        pub fn max(self, o: Self) -> Self {
            F32x4(f32x4_pmax(self.0, o.0))
        }
        /// Lanes 0, 2 of `a` then of `b`: the even elements of `a ++ b`.
        #[inline(always)]
        pub fn evens(a: Self, b: Self) -> Self {
            F32x4(i32x4_shuffle::<0, 2, 4, 6>(a.0, b.0))
        }
        #[inline(always)]
        pub fn odds(a: Self, b: Self) -> Self {
            F32x4(i32x4_shuffle::<1, 3, 5, 7>(a.0, b.0))
        }
        /// `[a0, b0, a1, b1]`
        #[inline(always)]
        pub fn zip_lo(a: Self, b: Self) -> Self {
            F32x4(i32x4_shuffle::<0, 4, 1, 5>(a.0, b.0))
        }
        /// `[a2, b2, a3, b3]`
        #[inline(always)]
        pub fn zip_hi(a: Self, b: Self) -> Self {
            F32x4(i32x4_shuffle::<2, 6, 3, 7>(a.0, b.0))
        }
        #[inline(always)]
        pub fn to_array(self) -> [f32; 4] {
            [
                f32x4_extract_lane::<0>(self.0),
                f32x4_extract_lane::<1>(self.0),
                f32x4_extract_lane::<2>(self.0),
                f32x4_extract_lane::<3>(self.0),
            ]
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use core::arch::x86_64::*;

    // SSE2 is part of x86_64: no runtime check needed.
    #[derive(Clone, Copy)]
    pub struct F32x4(__m128);

    impl std::ops::Add for F32x4 {
        type Output = Self;
        #[inline(always)]
        fn add(self, o: Self) -> Self {
            // SAFETY: SSE2 is always present on x86_64.
            F32x4(unsafe { _mm_add_ps(self.0, o.0) })
        }
    }

    impl std::ops::Sub for F32x4 {
        type Output = Self;
        #[inline(always)]
        fn sub(self, o: Self) -> Self {
            // SAFETY: as above.
            F32x4(unsafe { _mm_sub_ps(self.0, o.0) })
        }
    }

    impl std::ops::Mul for F32x4 {
        type Output = Self;
        #[inline(always)]
        fn mul(self, o: Self) -> Self {
            // SAFETY: as above.
            F32x4(unsafe { _mm_mul_ps(self.0, o.0) })
        }
    }

    // SAFETY (every `unsafe` below): SSE2 is always present on x86_64, and loads and stores go
    // through slices of at least four elements (unaligned access is allowed).
    impl F32x4 {
        #[inline(always)]
        pub fn load(s: &[f32]) -> Self {
            F32x4(unsafe { _mm_loadu_ps(s[..4].as_ptr()) })
        }
        #[inline(always)]
        pub fn store(self, s: &mut [f32]) {
            unsafe { _mm_storeu_ps(s[..4].as_mut_ptr(), self.0) }
        }
        #[inline(always)]
        pub fn splat(v: f32) -> Self {
            F32x4(unsafe { _mm_set1_ps(v) })
        }
        /// `self · b + c` (SSE has no fused multiply-add; the wider widths do).
        #[inline(always)]
        pub fn mul_add(self, b: Self, c: Self) -> Self {
            self * b + c
        }
        #[inline(always)]
        pub fn relu(self) -> Self {
            F32x4(unsafe { _mm_max_ps(self.0, _mm_setzero_ps()) })
        }
        #[inline(always)]
        pub fn max(self, o: Self) -> Self {
            F32x4(unsafe { _mm_max_ps(o.0, self.0) })
        }
        #[inline(always)]
        pub fn evens(a: Self, b: Self) -> Self {
            F32x4(unsafe { _mm_shuffle_ps::<0b10_00_10_00>(a.0, b.0) })
        }
        #[inline(always)]
        pub fn odds(a: Self, b: Self) -> Self {
            F32x4(unsafe { _mm_shuffle_ps::<0b11_01_11_01>(a.0, b.0) })
        }
        #[inline(always)]
        pub fn zip_lo(a: Self, b: Self) -> Self {
            F32x4(unsafe { _mm_unpacklo_ps(a.0, b.0) })
        }
        #[inline(always)]
        pub fn zip_hi(a: Self, b: Self) -> Self {
            F32x4(unsafe { _mm_unpackhi_ps(a.0, b.0) })
        }
        #[inline(always)]
        pub fn to_array(self) -> [f32; 4] {
            let mut a = [0f32; 4];
            self.store(&mut a);
            a
        }
    }
}

#[cfg(not(any(target_arch = "wasm32", target_arch = "x86_64")))]
mod imp {
    #[derive(Clone, Copy)]
    pub struct F32x4([f32; 4]);

    impl std::ops::Add for F32x4 {
        type Output = Self;
        #[inline(always)]
        fn add(self, o: Self) -> Self {
            F32x4(std::array::from_fn(|i| self.0[i] + o.0[i]))
        }
    }

    impl std::ops::Sub for F32x4 {
        type Output = Self;
        #[inline(always)]
        fn sub(self, o: Self) -> Self {
            F32x4(std::array::from_fn(|i| self.0[i] - o.0[i]))
        }
    }

    impl std::ops::Mul for F32x4 {
        type Output = Self;
        #[inline(always)]
        fn mul(self, o: Self) -> Self {
            F32x4(std::array::from_fn(|i| self.0[i] * o.0[i]))
        }
    }

    impl F32x4 {
        #[inline(always)]
        pub fn load(s: &[f32]) -> Self {
            F32x4(s[..4].try_into().expect("four elements"))
        }
        #[inline(always)]
        pub fn store(self, s: &mut [f32]) {
            s[..4].copy_from_slice(&self.0);
        }
        #[inline(always)]
        pub fn splat(v: f32) -> Self {
            F32x4([v; 4])
        }
        #[inline(always)]
        pub fn mul_add(self, b: Self, c: Self) -> Self {
            self * b + c
        }
        #[inline(always)]
        pub fn relu(self) -> Self {
            F32x4(self.0.map(|v| v.max(0.0)))
        }
        #[inline(always)]
        pub fn max(self, o: Self) -> Self {
            F32x4(std::array::from_fn(|i| if o.0[i] > self.0[i] { o.0[i] } else { self.0[i] }))
        }
        #[inline(always)]
        pub fn evens(a: Self, b: Self) -> Self {
            F32x4([a.0[0], a.0[2], b.0[0], b.0[2]])
        }
        #[inline(always)]
        pub fn odds(a: Self, b: Self) -> Self {
            F32x4([a.0[1], a.0[3], b.0[1], b.0[3]])
        }
        #[inline(always)]
        pub fn zip_lo(a: Self, b: Self) -> Self {
            F32x4([a.0[0], b.0[0], a.0[1], b.0[1]])
        }
        #[inline(always)]
        pub fn zip_hi(a: Self, b: Self) -> Self {
            F32x4([a.0[2], b.0[2], a.0[3], b.0[3]])
        }
        #[inline(always)]
        pub fn to_array(self) -> [f32; 4] {
            self.0
        }
    }
}

pub use imp::F32x4;

/// What a kernel written for any lane count needs of its vector type.
pub trait Lanes:
    Copy + std::ops::Add<Output = Self> + std::ops::Sub<Output = Self> + std::ops::Mul<Output = Self>
{
    /// Lanes (f32s) a vector holds.
    const N: usize;
    /// The first `N` elements of `s`.
    fn load(s: &[f32]) -> Self;
    fn store(self, s: &mut [f32]);
    fn splat(v: f32) -> Self;
    /// `self · b + c`, fused where the instructions allow (rounded once: results may differ from
    /// `self * b + c` in the last bit).
    fn mul_add(self, b: Self, c: Self) -> Self;
    fn relu(self) -> Self;
    /// The even elements of `a ++ b`.
    fn evens(a: Self, b: Self) -> Self;
    /// The odd elements of `a ++ b`.
    fn odds(a: Self, b: Self) -> Self;
    /// The first half of `a` and `b` interleaved: `[a0, b0, a1, b1, …]`.
    fn zip_lo(a: Self, b: Self) -> Self;
    /// The second half of `a` and `b` interleaved.
    fn zip_hi(a: Self, b: Self) -> Self;
}

impl Lanes for F32x4 {
    const N: usize = 4;
    #[inline(always)]
    fn load(s: &[f32]) -> Self {
        F32x4::load(s)
    }
    #[inline(always)]
    fn store(self, s: &mut [f32]) {
        F32x4::store(self, s)
    }
    #[inline(always)]
    fn splat(v: f32) -> Self {
        F32x4::splat(v)
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        F32x4::mul_add(self, b, c)
    }
    #[inline(always)]
    fn relu(self) -> Self {
        F32x4::relu(self)
    }
    #[inline(always)]
    fn evens(a: Self, b: Self) -> Self {
        F32x4::evens(a, b)
    }
    #[inline(always)]
    fn odds(a: Self, b: Self) -> Self {
        F32x4::odds(a, b)
    }
    #[inline(always)]
    fn zip_lo(a: Self, b: Self) -> Self {
        F32x4::zip_lo(a, b)
    }
    #[inline(always)]
    fn zip_hi(a: Self, b: Self) -> Self {
        F32x4::zip_hi(a, b)
    }
}

/// How many lanes a [`Lanes`] kernel runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Width {
    W4,
    /// AVX2 + FMA.
    W8,
    /// AVX-512F.
    W16,
}

impl Width {
    /// The widest this CPU runs (std caches the feature test).
    pub fn widest() -> Width {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                return Width::W16;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Width::W8;
            }
        }
        Width::W4
    }

    /// Every width this CPU runs, narrowest first (the tests run a kernel at each). In this
    /// crate's unit tests every width: those the CPU lacks run on [`emulated`] lanes, so the
    /// 16-lane paths are tested on an AVX2 machine too.
    pub fn available() -> Vec<Width> {
        let all = [Width::W4, Width::W8, Width::W16];
        match cfg!(test) {
            true => all.to_vec(),
            false => all.into_iter().filter(|w| *w <= Width::widest()).collect(),
        }
    }

    pub fn lanes(self) -> usize {
        match self {
            Width::W4 => 4,
            Width::W8 => 8,
            Width::W16 => 16,
        }
    }

    /// The widest available width that `items` (elements of a row) fill more than half of, so
    /// a short row does not pay for lanes it leaves empty.
    pub fn for_items(items: usize) -> Width {
        let limit = match LIMIT.with(|l| l.get()) {
            // A unit test's limit may name a width the CPU lacks: it runs emulated.
            Some(limit) if cfg!(test) => limit,
            Some(limit) => limit.min(Width::widest()),
            None => Width::widest(),
        };
        let mut w = Width::W4;
        for wider in [Width::W8, Width::W16] {
            if wider <= limit && 2 * items > wider.lanes() {
                w = wider;
            }
        }
        w
    }

    /// Runs `kernel` with this width's vector type, compiled for its instructions.
    #[inline(always)]
    pub fn run<K: Kernel>(self, kernel: K) -> K::Output {
        match self {
            #[cfg(target_arch = "x86_64")]
            Width::W16 if Width::widest() >= Width::W16 => {
                // SAFETY: the CPU has AVX-512F (checked just above).
                unsafe { wide::avx512(kernel) }
            }
            #[cfg(target_arch = "x86_64")]
            Width::W8 if Width::widest() >= Width::W8 => {
                // SAFETY: the CPU has AVX2 and FMA (checked just above).
                unsafe { wide::avx2(kernel) }
            }
            #[cfg(target_arch = "x86_64")]
            Width::W4 if Width::widest() >= Width::W8 => {
                // SAFETY: as above.
                unsafe { wide::avx2_narrow(kernel) }
            }
            #[cfg(test)]
            Width::W16 => kernel.run::<emulated::Lanes<16>>(),
            #[cfg(test)]
            Width::W8 => kernel.run::<emulated::Lanes<8>>(),
            _ => kernel.run::<F32x4>(),
        }
    }
}

thread_local! {
    /// The widest [`Width::for_items`] picks on this thread (`None`: the CPU's widest): tests
    /// set it to run every width.
    static LIMIT: std::cell::Cell<Option<Width>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with kernels on this thread no wider than `limit` (kernels that split their work
/// among threads run it on this one at a limit; the tests of every width do).
pub fn with_width_limit<R>(limit: Width, f: impl FnOnce() -> R) -> R {
    let before = LIMIT.with(|l| l.replace(Some(limit)));
    let out = f();
    LIMIT.with(|l| l.set(before));
    out
}

/// A kernel generic over its vector type (a closure cannot be generic, so a struct holds its
/// arguments); `run` is `#[inline(always)]` so that it is compiled with the caller's features.
pub trait Kernel {
    type Output;
    fn run<S: Lanes>(self) -> Self::Output;
}

#[cfg(target_arch = "x86_64")]
mod wide {
    use super::{Kernel, Lanes};
    use core::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2<K: Kernel>(kernel: K) -> K::Output {
        kernel.run::<F32x8>()
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2_narrow<K: Kernel>(kernel: K) -> K::Output {
        kernel.run::<super::F32x4>()
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn avx512<K: Kernel>(kernel: K) -> K::Output {
        kernel.run::<F32x16>()
    }

    /// Eight lanes; only ever used inside [`avx2`], so the CPU has AVX2 and FMA.
    #[derive(Clone, Copy)]
    pub struct F32x8(__m256);

    /// Sixteen lanes; only ever used inside [`avx512`], so the CPU has AVX-512F.
    #[derive(Clone, Copy)]
    pub struct F32x16(__m512);

    // SAFETY (every `unsafe` below): these types exist only inside `avx2` / `avx512`, which are
    // entered after the CPU was seen to have the features; loads and stores go through slices of
    // at least N elements (unaligned access is allowed).
    impl std::ops::Add for F32x8 {
        type Output = Self;
        #[inline(always)]
        fn add(self, o: Self) -> Self {
            F32x8(unsafe { _mm256_add_ps(self.0, o.0) })
        }
    }
    impl std::ops::Sub for F32x8 {
        type Output = Self;
        #[inline(always)]
        fn sub(self, o: Self) -> Self {
            F32x8(unsafe { _mm256_sub_ps(self.0, o.0) })
        }
    }
    impl std::ops::Mul for F32x8 {
        type Output = Self;
        #[inline(always)]
        fn mul(self, o: Self) -> Self {
            F32x8(unsafe { _mm256_mul_ps(self.0, o.0) })
        }
    }
    impl Lanes for F32x8 {
        const N: usize = 8;
        #[inline(always)]
        fn load(s: &[f32]) -> Self {
            F32x8(unsafe { _mm256_loadu_ps(s[..8].as_ptr()) })
        }
        #[inline(always)]
        fn store(self, s: &mut [f32]) {
            unsafe { _mm256_storeu_ps(s[..8].as_mut_ptr(), self.0) }
        }
        #[inline(always)]
        fn splat(v: f32) -> Self {
            F32x8(unsafe { _mm256_set1_ps(v) })
        }
        #[inline(always)]
        fn mul_add(self, b: Self, c: Self) -> Self {
            F32x8(unsafe { _mm256_fmadd_ps(self.0, b.0, c.0) })
        }
        #[inline(always)]
        fn relu(self) -> Self {
            F32x8(unsafe { _mm256_max_ps(self.0, _mm256_setzero_ps()) })
        }
        // shuffle_ps works within 128-bit halves: [a0 a2 b0 b2 | a4 a6 b4 b6]; the 64-bit
        // permute puts the pairs in order.
        #[inline(always)]
        fn evens(a: Self, b: Self) -> Self {
            F32x8(unsafe {
                let s = _mm256_shuffle_ps::<0b10_00_10_00>(a.0, b.0);
                _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(s)))
            })
        }
        #[inline(always)]
        fn odds(a: Self, b: Self) -> Self {
            F32x8(unsafe {
                let s = _mm256_shuffle_ps::<0b11_01_11_01>(a.0, b.0);
                _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(s)))
            })
        }
        // unpack works within halves too: lo = [a0 b0 a1 b1 | a4 b4 a5 b5], hi = [a2 b2 a3 b3 | …].
        #[inline(always)]
        fn zip_lo(a: Self, b: Self) -> Self {
            F32x8(unsafe {
                _mm256_permute2f128_ps::<0x20>(_mm256_unpacklo_ps(a.0, b.0), _mm256_unpackhi_ps(a.0, b.0))
            })
        }
        #[inline(always)]
        fn zip_hi(a: Self, b: Self) -> Self {
            F32x8(unsafe {
                _mm256_permute2f128_ps::<0x31>(_mm256_unpacklo_ps(a.0, b.0), _mm256_unpackhi_ps(a.0, b.0))
            })
        }
    }

    impl std::ops::Add for F32x16 {
        type Output = Self;
        #[inline(always)]
        fn add(self, o: Self) -> Self {
            F32x16(unsafe { _mm512_add_ps(self.0, o.0) })
        }
    }
    impl std::ops::Sub for F32x16 {
        type Output = Self;
        #[inline(always)]
        fn sub(self, o: Self) -> Self {
            F32x16(unsafe { _mm512_sub_ps(self.0, o.0) })
        }
    }
    impl std::ops::Mul for F32x16 {
        type Output = Self;
        #[inline(always)]
        fn mul(self, o: Self) -> Self {
            F32x16(unsafe { _mm512_mul_ps(self.0, o.0) })
        }
    }
    /// `permutex2var` indices: `i < 16` picks `a[i]`, `16 + i` picks `b[i]`.
    #[inline(always)]
    fn pick(a: __m512, idx: [i32; 16], b: __m512) -> __m512 {
        unsafe { _mm512_permutex2var_ps(a, _mm512_loadu_si512(idx.as_ptr().cast()), b) }
    }
    impl Lanes for F32x16 {
        const N: usize = 16;
        #[inline(always)]
        fn load(s: &[f32]) -> Self {
            F32x16(unsafe { _mm512_loadu_ps(s[..16].as_ptr()) })
        }
        #[inline(always)]
        fn store(self, s: &mut [f32]) {
            unsafe { _mm512_storeu_ps(s[..16].as_mut_ptr(), self.0) }
        }
        #[inline(always)]
        fn splat(v: f32) -> Self {
            F32x16(unsafe { _mm512_set1_ps(v) })
        }
        #[inline(always)]
        fn mul_add(self, b: Self, c: Self) -> Self {
            F32x16(unsafe { _mm512_fmadd_ps(self.0, b.0, c.0) })
        }
        #[inline(always)]
        fn relu(self) -> Self {
            F32x16(unsafe { _mm512_max_ps(self.0, _mm512_setzero_ps()) })
        }
        #[inline(always)]
        fn evens(a: Self, b: Self) -> Self {
            F32x16(pick(a.0, std::array::from_fn(|i| 2 * i as i32), b.0))
        }
        #[inline(always)]
        fn odds(a: Self, b: Self) -> Self {
            F32x16(pick(a.0, std::array::from_fn(|i| 2 * i as i32 + 1), b.0))
        }
        #[inline(always)]
        fn zip_lo(a: Self, b: Self) -> Self {
            F32x16(pick(a.0, std::array::from_fn(|i| (i / 2 + 16 * (i % 2)) as i32), b.0))
        }
        #[inline(always)]
        fn zip_hi(a: Self, b: Self) -> Self {
            F32x16(pick(a.0, std::array::from_fn(|i| (8 + i / 2 + 16 * (i % 2)) as i32), b.0))
        }
    }
}

/// Lanes as plain arrays, for the unit tests of the widths this CPU lacks: every kernel's
/// generic code then runs 8 and 16 lanes wide on any machine (the vector types' own shuffles
/// are tested where the CPU has them, by `every_width_shuffles_as_defined`).
#[cfg(test)]
mod emulated {
    #[derive(Clone, Copy)]
    pub struct Lanes<const N: usize>([f32; N]);

    impl<const N: usize> std::ops::Add for Lanes<N> {
        type Output = Self;
        fn add(self, o: Self) -> Self {
            Lanes(std::array::from_fn(|i| self.0[i] + o.0[i]))
        }
    }
    impl<const N: usize> std::ops::Sub for Lanes<N> {
        type Output = Self;
        fn sub(self, o: Self) -> Self {
            Lanes(std::array::from_fn(|i| self.0[i] - o.0[i]))
        }
    }
    impl<const N: usize> std::ops::Mul for Lanes<N> {
        type Output = Self;
        fn mul(self, o: Self) -> Self {
            Lanes(std::array::from_fn(|i| self.0[i] * o.0[i]))
        }
    }
    impl<const N: usize> super::Lanes for Lanes<N> {
        const N: usize = N;
        fn load(s: &[f32]) -> Self {
            Lanes(s[..N].try_into().expect("N elements"))
        }
        fn store(self, s: &mut [f32]) {
            s[..N].copy_from_slice(&self.0);
        }
        fn splat(v: f32) -> Self {
            Lanes([v; N])
        }
        fn mul_add(self, b: Self, c: Self) -> Self {
            Lanes(std::array::from_fn(|i| self.0[i].mul_add(b.0[i], c.0[i])))
        }
        fn relu(self) -> Self {
            Lanes(self.0.map(|v| v.max(0.0)))
        }
        fn evens(a: Self, b: Self) -> Self {
            Lanes(std::array::from_fn(|i| if 2 * i < N { a.0[2 * i] } else { b.0[2 * i - N] }))
        }
        fn odds(a: Self, b: Self) -> Self {
            Lanes(std::array::from_fn(|i| if 2 * i < N { a.0[2 * i + 1] } else { b.0[2 * i + 1 - N] }))
        }
        fn zip_lo(a: Self, b: Self) -> Self {
            Lanes(std::array::from_fn(|i| if i % 2 == 0 { a.0[i / 2] } else { b.0[i / 2] }))
        }
        fn zip_hi(a: Self, b: Self) -> Self {
            Lanes(std::array::from_fn(|i| if i % 2 == 0 { a.0[N / 2 + i / 2] } else { b.0[N / 2 + i / 2] }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{F32x4, Kernel, Lanes, Width};

    #[test]
    fn lanes() {
        let a = F32x4::load(&[0., 1., 2., 3.]);
        let b = F32x4::load(&[4., 5., 6., 7., 99.]);
        assert_eq!(F32x4::evens(a, b).to_array(), [0., 2., 4., 6.]);
        assert_eq!(F32x4::odds(a, b).to_array(), [1., 3., 5., 7.]);
        assert_eq!(F32x4::zip_lo(a, b).to_array(), [0., 4., 1., 5.]);
        assert_eq!(F32x4::zip_hi(a, b).to_array(), [2., 6., 3., 7.]);
        assert_eq!(((a - b).relu() + F32x4::splat(1.0)).to_array(), [1.; 4]);
        let mut out = [0f32; 5];
        b.store(&mut out[1..]);
        assert_eq!(out, [0., 4., 5., 6., 7.]);
    }

    /// Each width's shuffles against their definitions, at every width this CPU has.
    #[test]
    fn every_width_shuffles_as_defined() {
        struct Check;
        impl Kernel for Check {
            type Output = ();
            #[inline(always)]
            fn run<S: Lanes>(self) {
                let n = S::N;
                let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
                let b: Vec<f32> = (0..n).map(|i| (n + i) as f32).collect();
                let (va, vb) = (S::load(&a), S::load(&b));
                let got = |v: S| {
                    let mut out = vec![0f32; n];
                    v.store(&mut out);
                    out
                };
                let ab: Vec<f32> = a.iter().chain(&b).copied().collect();
                assert_eq!(
                    got(S::evens(va, vb)),
                    ab.iter().step_by(2).copied().collect::<Vec<_>>(),
                    "{n} evens"
                );
                assert_eq!(got(S::odds(va, vb)), ab.iter().skip(1).step_by(2).copied().collect::<Vec<_>>());
                let zipped: Vec<f32> = a.iter().zip(&b).flat_map(|(x, y)| [*x, *y]).collect();
                assert_eq!(got(S::zip_lo(va, vb)), zipped[..n], "{n} zip_lo");
                assert_eq!(got(S::zip_hi(va, vb)), zipped[n..], "{n} zip_hi");
                let fused = got(va.mul_add(S::splat(2.0), vb));
                assert_eq!(fused, (0..n).map(|i| (n + 3 * i) as f32).collect::<Vec<_>>(), "{n} mul_add");
                let relu = got((va - vb + S::splat(3.0)).relu());
                assert_eq!(relu, vec![if (n as f32) < 3.0 { 3.0 - n as f32 } else { 0.0 }; n]);
            }
        }
        for w in Width::available() {
            w.run(Check);
        }
        assert_eq!(Width::for_items(4), Width::W4);
        assert!(Width::for_items(16) == Width::widest());
    }
}
