//! 2-D convex geometry for the toy experiment: hulls, Minkowski sums, distances.
//!
//! Prop. 4.2 of the paper: with softmax maps, output row `j` of head `h` is a convex
//! combination of the projected inputs `X W^h`, so the layer's output lies in the Minkowski
//! sum `R = sum_h conv{X[i] W^h}`. These helpers compute `R` and how far a point lies from it.

/// A point in the plane.
pub type P2 = [f64; 2];

fn cross(o: P2, a: P2, b: P2) -> f64 {
    (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
}

/// Convex hull, counter-clockwise, without repeated end point (Andrew's monotone chain).
pub fn convex_hull(points: &[P2]) -> Vec<P2> {
    let mut pts: Vec<P2> = points.to_vec();
    pts.sort_by(|a, b| a.partial_cmp(b).expect("finite coordinates"));
    pts.dedup();
    if pts.len() < 3 {
        return pts;
    }
    let mut lower: Vec<P2> = Vec::new();
    for &p in &pts {
        while lower.len() >= 2 && cross(lower[lower.len() - 2], lower[lower.len() - 1], p) <= 0.0 {
            lower.pop();
        }
        lower.push(p);
    }
    let mut upper: Vec<P2> = Vec::new();
    for &p in pts.iter().rev() {
        while upper.len() >= 2 && cross(upper[upper.len() - 2], upper[upper.len() - 1], p) <= 0.0 {
            upper.pop();
        }
        upper.push(p);
    }
    lower.pop();
    upper.pop();
    lower.extend(upper);
    lower
}

/// Minkowski sum of convex hulls: `conv(A) + conv(B) = conv{a + b}`.
pub fn minkowski_sum(sets: &[Vec<P2>]) -> Vec<P2> {
    let mut acc = vec![[0.0, 0.0]];
    for set in sets {
        let hull = convex_hull(set);
        let sums: Vec<P2> = acc
            .iter()
            .flat_map(|a| hull.iter().map(move |b| [a[0] + b[0], a[1] + b[1]]))
            .collect();
        acc = convex_hull(&sums);
    }
    acc
}

/// Euclidean distance from `p` to the convex polygon `hull` (counter-clockwise); 0 inside.
pub fn distance_to_hull(p: P2, hull: &[P2]) -> f64 {
    match hull.len() {
        0 => f64::INFINITY,
        1 => dist(p, hull[0]),
        2 => seg_dist(p, hull[0], hull[1]),
        n => {
            let inside = (0..n).all(|i| cross(hull[i], hull[(i + 1) % n], p) >= 0.0);
            if inside {
                0.0
            } else {
                (0..n)
                    .map(|i| seg_dist(p, hull[i], hull[(i + 1) % n]))
                    .fold(f64::INFINITY, f64::min)
            }
        }
    }
}

fn dist(a: P2, b: P2) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
}

fn seg_dist(p: P2, a: P2, b: P2) -> f64 {
    let ab = [b[0] - a[0], b[1] - a[1]];
    let len2 = ab[0] * ab[0] + ab[1] * ab[1];
    if len2 == 0.0 {
        return dist(p, a);
    }
    let t = (((p[0] - a[0]) * ab[0] + (p[1] - a[1]) * ab[1]) / len2).clamp(0.0, 1.0);
    dist(p, [a[0] + t * ab[0], a[1] + t * ab[1]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hull_of_square_with_interior_point() {
        let h = convex_hull(&[[0., 0.], [1., 0.], [1., 1.], [0., 1.], [0.5, 0.5]]);
        assert_eq!(h.len(), 4);
        assert_eq!(distance_to_hull([0.5, 0.5], &h), 0.0);
        assert!((distance_to_hull([2.0, 0.5], &h) - 1.0).abs() < 1e-12);
        assert!((distance_to_hull([2.0, 2.0], &h) - 2f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn minkowski_sum_of_two_squares_is_a_bigger_square() {
        let sq = vec![[0., 0.], [1., 0.], [1., 1.], [0., 1.]];
        let m = minkowski_sum(&[sq.clone(), sq]);
        assert_eq!(m.len(), 4);
        assert_eq!(distance_to_hull([1.9, 1.9], &m), 0.0);
        assert!((distance_to_hull([3.0, 1.0], &m) - 1.0).abs() < 1e-12);
    }
}
