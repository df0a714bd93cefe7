//! The toy experiment end to end on a short schedule: deterministic, Prop. 4.2 holds for run
//! (i), and the coefficients take run (iii) outside the convex hull of the inputs.

use coeff_experiments::toy;
use coeff_harness::backend;

fn short(seed: u64) -> toy::ToyArgs {
    toy::ToyArgs {
        seed,
        nodes: 10,
        heads: 3,
        steps: 400,
        lr: 0.02,
        scale: 1.5,
    }
}

#[test]
fn toy_is_deterministic_and_shows_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let device = backend::device();
    let a = toy::run::<backend::Train>(&short(5), &dir.path().join("a"), backend::NAME, &device)
        .unwrap();
    let b = toy::run::<backend::Train>(&short(5), &dir.path().join("b"), backend::NAME, &device)
        .unwrap();
    for (x, y) in a.runs.iter().zip(&b.runs) {
        assert_eq!(
            x.final_loss, y.final_loss,
            "run {} is not deterministic",
            x.name
        );
        assert_eq!(x.outputs, y.outputs);
    }
    assert_eq!(
        a.target_outside_input_hull, 10,
        "target must lie outside conv(X)"
    );
    assert!(a.prop_4_2.holds, "{:?}", a.prop_4_2);
    assert_eq!(a.runs[0].outside_start_bound, 0, "run (i) left R0");
    assert!(a.prop_4_2.mse_lower_bound > 0.01);
    let (i, iii) = (&a.runs[0], &a.runs[2]);
    assert!(
        iii.final_loss < 0.5 * i.final_loss,
        "(iii) {} vs (i) {}",
        iii.final_loss,
        i.final_loss
    );
    assert!(iii.outside_input_hull > 0, "Coeff never left conv(X)");
    for f in ["summary.json", "results.md", "toy.png", "loss.png"] {
        assert!(
            dir.path().join("a").join(f).metadata().unwrap().len() > 0,
            "{f} missing"
        );
    }
}
