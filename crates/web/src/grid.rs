//! The channel grid's geometry: where a tile is, which channel a point or a key reaches, and
//! which rows the canvas holds as the grid scrolls (see `components::channel_grid`).

/// A tile on screen, and the space between tiles (CSS px).
pub const TILE: u32 = 56;
pub const GAP: u32 = 3;

/// The channel under (`x`, `y`) (CSS px from the canvas's corner), none in a gap or past the last.
pub fn channel_at(x: i32, y: i32, cols: usize, channels: usize) -> Option<usize> {
    let step = (TILE + GAP) as i32;
    if x < 0 || y < 0 || x % step >= TILE as i32 || y % step >= TILE as i32 {
        return None;
    }
    let (col, row) = ((x / step) as usize, (y / step) as usize);
    let c = row * cols + col;
    (col < cols && c < channels).then_some(c)
}

/// The rows the canvas holds: those within a view's `height` above and below the view at `top`.
pub fn window(top: i32, height: i32, rows: usize) -> (usize, usize) {
    let step = (TILE + GAP) as i32;
    let from = ((top - height).max(0) / step) as usize;
    let to = ((top + 2 * height).max(0) as usize).div_ceil(step as usize);
    (from.min(rows), to.clamp(from.min(rows), rows))
}

/// Whether the rows in the view at `top` are all in `held` (then the canvas needs no redraw).
pub fn covers(held: (usize, usize), top: i32, height: i32, rows: usize) -> bool {
    let step = (TILE + GAP) as i32;
    let first = (top.max(0) / step) as usize;
    let last = ((top + height).max(0) as usize).div_ceil(step as usize).min(rows);
    held.0 <= first && last <= held.1
}

/// The channel an arrow (or Home/End/Page) key moves to from `at`.
pub fn moved(key: &str, at: usize, cols: usize, channels: usize) -> Option<usize> {
    let last = channels.saturating_sub(1);
    Some(match key {
        "ArrowRight" => (at + 1).min(last),
        "ArrowLeft" => at.saturating_sub(1),
        "ArrowDown" => (at + cols).min(last),
        "ArrowUp" => at.saturating_sub(cols),
        "PageDown" => (at + 4 * cols).min(last),
        "PageUp" => at.saturating_sub(4 * cols),
        "Home" => 0,
        "End" => last,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_falls_in_one_tile_or_a_gap() {
        assert_eq!(channel_at(0, 0, 4, 10), Some(0));
        assert_eq!(channel_at(55, 55, 4, 10), Some(0));
        assert_eq!(channel_at(56, 0, 4, 10), None, "the gap");
        assert_eq!(channel_at(59, 0, 4, 10), Some(1));
        assert_eq!(channel_at(59, 59, 4, 10), Some(5));
        assert_eq!(channel_at(2 * 59, 2 * 59, 4, 10), None, "past the last channel");
        assert_eq!(channel_at(4 * 59, 0, 4, 10), None, "past the last column");
        assert_eq!(channel_at(-1, 0, 4, 10), None);
    }

    #[test]
    fn the_canvas_holds_the_rows_near_the_view() {
        // 2,048 channels, 13 to a row: 158 rows of 59 px; a 480 px view.
        assert_eq!(window(0, 480, 158), (0, 17), "the first view and one below it");
        assert_eq!(window(4000, 480, 158), (59, 85));
        assert_eq!(window(9000, 480, 158), (144, 158), "clamped at the last row");
        assert_eq!(window(0, 480, 3), (0, 3), "a short grid: all of it");
        assert!(covers(window(4000, 480, 158), 4000, 480, 158));
        assert!(covers(window(4000, 480, 158), 4400, 480, 158), "scrolled less than a view: no redraw");
        assert!(!covers(window(4000, 480, 158), 5000, 480, 158));
        assert!(!covers(window(4000, 480, 158), 3000, 480, 158));
    }

    #[test]
    fn keys_move_within_the_channels() {
        assert_eq!(moved("ArrowRight", 3, 4, 10), Some(4));
        assert_eq!(moved("ArrowDown", 7, 4, 10), Some(9));
        assert_eq!(moved("ArrowUp", 2, 4, 10), Some(0));
        assert_eq!(moved("End", 2, 4, 10), Some(9));
        assert_eq!(moved("Home", 9, 4, 10), Some(0));
        assert_eq!(moved("ArrowLeft", 0, 4, 10), Some(0));
        assert_eq!(moved("Enter", 0, 4, 10), None);
    }
}
