//! SVG bar charts of cycles per packet by class (plotters, SVG backend only: text is written as
//! SVG `<text>` elements, so no font files or system libraries are needed).
//!
//! One chart shape serves both commands: classes along the x axis, one bar per series in each
//! class group (ladder: one series per step; `tcp-rx`: one per domain), the value printed on top
//! of each bar, a title, axis labels and a legend. The y axis is logarithmic, with light grid
//! lines only at the decades: classes span four orders of magnitude (`mm` in flip mode against
//! `find_domain`), and on a linear axis the small ones are invisible.

use std::collections::BTreeMap;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::Error;
use crate::ladder::classes_in;
use crate::report::StepResult;
use crate::tcp_rx::ProfileMode;

/// One series of bars.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Value by class name (missing: 0).
    pub values: BTreeMap<String, f64>,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
];

fn chart_err<E: std::fmt::Display>(e: E) -> Error {
    Error::Chart(e.to_string())
}

/// Grouped bars: `classes` along x, one bar per series per class. Returns the SVG text.
pub fn bar_chart_svg(
    title: &str,
    y_desc: &str,
    classes: &[String],
    series: &[Series],
) -> Result<String, Error> {
    if classes.is_empty() || series.is_empty() {
        return Err(Error::Chart("nothing to draw: no class has cycles".into()));
    }
    let max = series
        .iter()
        .flat_map(|s| s.values.values())
        .fold(0.0f64, |a, &b| a.max(b));
    // Decades from 1 to above the tallest bar, with room for its label.
    let ymax = 10f64.powf((max.max(1.0) * 2.0).log10().ceil());
    let n = classes.len();
    let width = (160 + n * (40 + 28 * series.len())).clamp(640, 1800) as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(chart_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(56)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..n as f64, (1f64..ymax).log_scale())
            .map_err(chart_err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n + 1)
            .x_label_formatter(&|_| String::new())
            .y_max_light_lines(0)
            .y_label_formatter(&|y| si(*y))
            .x_desc("class")
            .y_desc(y_desc)
            .axis_desc_style(("sans-serif", 16))
            .draw()
            .map_err(chart_err)?;
        let group = 0.8;
        let bar = group / series.len() as f64;
        for (j, s) in series.iter().enumerate() {
            let color = COLORS[j % COLORS.len()];
            let bars = classes.iter().enumerate().map(|(i, c)| {
                let x0 = i as f64 + (1.0 - group) / 2.0 + j as f64 * bar;
                let v = s.values.get(c).copied().unwrap_or(0.0).max(1.0);
                Rectangle::new([(x0, 1.0), (x0 + bar * 0.92, v)], color.filled())
            });
            chart
                .draw_series(bars)
                .map_err(chart_err)?
                .label(s.name.clone())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled())
                });
            let label_style = TextStyle::from(("sans-serif", 11))
                .pos(Pos::new(HPos::Center, VPos::Bottom))
                .color(&BLACK);
            let labels = classes.iter().enumerate().filter_map(|(i, c)| {
                let v = s.values.get(c).copied().unwrap_or(0.0);
                let xc = i as f64 + (1.0 - group) / 2.0 + (j as f64 + 0.46) * bar;
                (v >= 1.0).then(|| Text::new(si(v), (xc, v), label_style.clone()))
            });
            chart.draw_series(labels).map_err(chart_err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(chart_err)?;
        // Class names under their groups, placed in pixels from the chart's own mapping.
        let name_style = TextStyle::from(("sans-serif", 14))
            .pos(Pos::new(HPos::Center, VPos::Top))
            .color(&BLACK);
        for (i, c) in classes.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(i as f64 + 0.5, 1.0));
            root.draw(&Text::new(c.clone(), (px, py + 8), name_style.clone()))
                .map_err(chart_err)?;
        }
        root.present().map_err(chart_err)?;
    }
    Ok(svg)
}

/// A value as the axis and bar labels print it: at most 3 significant figures, no trailing
/// zeros, k and M suffixes.
pub fn si(v: f64) -> String {
    let (x, suffix) = if v >= 1e6 {
        (v / 1e6, "M")
    } else if v >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let digits = if x >= 100.0 {
        0
    } else if x >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{x:.digits$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    format!("{text}{suffix}")
}

fn exact_only(r: &StepResult) -> Result<(), Error> {
    if r.profile_mode == ProfileMode::Exact {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "the chart shows cycles per packet, which only --profile exact measures (step \
             \"{}\" ran with {:?})",
            r.step, r.profile_mode
        )))
    }
}

/// The ladder's chart: dom0 + xen cycles per KiB of goodput by class, one bar per step (per
/// KiB, not per packet, because the offload steps change what a packet carries: a GSO
/// super-frame is one packet of up to 64 KiB).
pub fn ladder_svg(steps: &[StepResult]) -> Result<String, Error> {
    for s in steps {
        exact_only(s)?;
    }
    let series: Vec<Series> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| Series {
            name: format!("({}) {}", i + 1, s.step),
            values: s
                .cycles_per_packet
                .keys()
                .map(|k| (k.clone(), s.cpk(k)))
                .collect(),
        })
        .collect();
    let mtu = steps.first().map_or(0, |s| s.mtu);
    bar_chart_svg(
        &format!("splitnet optimization ladder: driver-domain cycles per KiB (MTU {mtu})"),
        "cycles per KiB of goodput (dom0 kernel + xen, log scale)",
        &classes_in(steps),
        &series,
    )
}

/// A `tcp-rx` run's chart: cycles per packet by class, one bar per domain (all contexts).
pub fn step_svg(r: &StepResult) -> Result<String, Error> {
    exact_only(r)?;
    let series: Vec<Series> = r
        .cycles_per_packet_by_domain
        .iter()
        .filter(|(_, v)| v.values().any(|&x| x > 0.0))
        .map(|(d, v)| Series {
            name: d.clone(),
            values: v.clone(),
        })
        .collect();
    let mut classes: Vec<(String, f64)> = Vec::new();
    for s in &series {
        for (c, &v) in &s.values {
            match classes.iter_mut().find(|(n, _)| n == c) {
                Some(e) => e.1 += v,
                None => classes.push((c.clone(), v)),
            }
        }
    }
    classes.retain(|(_, v)| *v > 0.0);
    classes.sort_by(|a, b| b.1.total_cmp(&a.1));
    let classes: Vec<String> = classes.into_iter().map(|(c, _)| c).collect();
    bar_chart_svg(
        &format!(
            "tcp-rx over the {} link, MTU {}: {:.2} Gb/s",
            r.link, r.mtu, r.throughput_gbps
        ),
        "cycles per packet (all contexts)",
        &classes,
        &series,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ladder::tests::three;

    /// Whether the SVG has a `<text>` element reading exactly `s`.
    fn has_text(svg: &str, s: &str) -> bool {
        svg.contains(&format!(">\n{s}\n</text>"))
    }

    #[test]
    fn ladder_chart_has_title_legend_and_class_names_as_text() {
        let svg = ladder_svg(&three()).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
        assert!(svg.contains("<text"), "text must be SVG text elements");
        assert!(svg.contains("optimization ladder"));
        assert!(
            svg.contains("rx-flip, 1 hypercall/packet"),
            "legend names each step"
        );
        for c in ["mm", "grant_table", "bridge", "copy"] {
            assert!(has_text(&svg, c), "class label {c} missing");
        }
        let mm = three()[0].cpk("mm");
        assert!(
            has_text(&svg, &si(mm)),
            "bar values are printed: {}",
            si(mm)
        );
        assert!(svg.contains("cycles per KiB"), "axis label");
        // A log axis: decade labels from 1 up past the tallest bar, a small class still a bar.
        for decade in ["1", "10", "100", "1k", "10k"] {
            assert!(has_text(&svg, decade), "y label {decade} missing");
        }
        // Three series of bars, one colour each.
        for c in &COLORS[..3] {
            let hex = format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2);
            assert!(svg.contains(&hex), "colour {hex} missing");
        }
    }

    #[test]
    fn si_labels_keep_three_figures() {
        assert_eq!(si(1.0), "1");
        assert_eq!(si(47.25), "47.2");
        assert_eq!(si(1000.0), "1k");
        assert_eq!(si(2818.2), "2.82k");
        assert_eq!(si(10_000.0), "10k");
        assert_eq!(si(35.04), "35");
        assert_eq!(si(217_077_276.0), "217M");
    }

    #[test]
    fn refuses_unprofiled_steps_and_empty_charts() {
        let mut st = three();
        st[1].profile_mode = ProfileMode::Off;
        assert!(matches!(ladder_svg(&st), Err(Error::Config(_))));
        assert!(matches!(
            bar_chart_svg("t", "y", &[], &[]),
            Err(Error::Chart(_))
        ));
    }

    #[test]
    fn step_chart_one_series_per_domain_with_work() {
        let mut r = three().remove(0);
        let mut guest = BTreeMap::new();
        guest.insert("tcp".to_string(), 900.0);
        guest.insert("netfront".to_string(), 100.0);
        r.cycles_per_packet_by_domain.insert("guest".into(), guest);
        r.cycles_per_packet_by_domain
            .insert("dom0".into(), BTreeMap::from([("mm".to_string(), 0.0)]));
        let svg = step_svg(&r).unwrap();
        assert!(has_text(&svg, "guest"));
        assert!(
            !has_text(&svg, "dom0"),
            "a domain with no work gets no legend entry"
        );
        assert!(has_text(&svg, "tcp") && has_text(&svg, "netfront"));
    }
}
