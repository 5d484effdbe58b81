//! Four f32 lanes: wasm32 simd128 in the browser, SSE on x86_64, a plain array elsewhere. The
//! hand-vectorised kernels are written once against this type.

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

#[cfg(test)]
mod tests {
    use super::F32x4;

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
}
