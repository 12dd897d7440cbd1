//! `--report FILE.svg` (or `.html`): the run's latency distribution as a picture, drawn with
//! `plotters` from the scenario's JSON line, with the headline figures in its title. The `.html`
//! form is the same picture inside a page, with every figure of the JSON line in a table under it.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use serde_json::Value;

const SIZE: (u32, u32) = (900, 480);

/// Writes the report of `result` to `path`: SVG, or HTML when the name ends in `.html`.
pub fn write(path: &Path, result: &Value) -> anyhow::Result<()> {
    let svg = svg(result)?;
    let html = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("html"));
    let content = if html { page(&svg, result) } else { svg };
    std::fs::write(path, content).with_context(|| format!("writing the report {}", path.display()))
}

/// The headline: what ran and what it achieved.
fn title(result: &Value) -> String {
    let latency = &result["latency"];
    let figure = |value: &Value| value.as_f64().map_or("-".to_owned(), |v| format!("{v:.2}"));
    format!(
        "{}: {} ops/s, p50 {} ms, p99 {} ms, errors {}",
        result["scenario"].as_str().unwrap_or("run"),
        result["per_second"]
            .as_f64()
            .map_or("-".to_owned(), |v| format!("{v:.0}")),
        figure(&latency["p50_ms"]),
        figure(&latency["p99_ms"]),
        result["errors"].as_u64().unwrap_or(0),
    )
}

/// The latency distribution: the share of operations per bucket (log-scaled time axis), and the
/// cumulative share, which reads off any percentile.
fn svg(result: &Value) -> anyhow::Result<String> {
    let buckets: Vec<(f64, f64)> = result["latency"]["histogram"]
        .as_array()
        .map(|buckets| {
            buckets
                .iter()
                .filter_map(|b| Some((b[0].as_f64()?, b[1].as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    let total: f64 = buckets.iter().map(|(_, count)| count).sum::<f64>().max(1.0);
    let lowest = buckets.first().map_or(0.01, |(upper, _)| upper / 1.25);
    let highest = buckets.last().map_or(1.0, |(upper, _)| *upper).max(lowest * 10.0);
    let mut cumulative = 0.0;
    let cdf: Vec<(f64, f64)> = buckets
        .iter()
        .map(|(upper, count)| {
            cumulative += count;
            (*upper, 100.0 * cumulative / total)
        })
        .collect();
    let share: Vec<(f64, f64)> = buckets
        .iter()
        .map(|(upper, count)| (*upper, 100.0 * count / total))
        .collect();

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title(result), ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d((lowest..highest).log_scale(), 0.0..100.0)?;
        chart
            .configure_mesh()
            .x_desc("latency (ms, log scale)")
            .y_desc("% of operations")
            .max_light_lines(4)
            .draw()?;
        chart
            .draw_series(share.iter().map(|&(upper, pct)| {
                Rectangle::new([(upper / 1.25, 0.0), (upper, pct)], BLUE.mix(0.5).filled())
            }))?
            .label("share per bucket")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], BLUE.mix(0.5).filled()));
        chart
            .draw_series(LineSeries::new(cdf, RED.stroke_width(2)))?
            .label("cumulative")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 12, y)], RED.stroke_width(2)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::MiddleRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

/// The picture in a page, with every top-level figure of the JSON line in a table.
fn page(svg: &str, result: &Value) -> String {
    let mut rows = String::new();
    if let Some(object) = result.as_object() {
        for (key, value) in object {
            if key == "latency" {
                continue;
            }
            rows.push_str(&format!(
                "<tr><th>{}</th><td>{}</td></tr>\n",
                escape(key),
                escape(&value.to_string())
            ));
        }
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title></head>\n<body>\n{svg}\n\
         <table>\n{rows}</table>\n</body></html>\n",
        escape(&title(result))
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn result() -> Value {
        json!({"scenario": "insert", "per_second": 1234.6, "errors": 0, "latency": {
            "p50_ms": 0.8, "p99_ms": 4.2, "histogram": [[0.5, 10], [0.625, 30], [1.0, 50], [5.0, 10]]}})
    }

    #[test]
    fn the_svg_carries_the_figures_in_its_title() {
        let svg = svg(&result()).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        assert!(
            svg.contains("insert: 1235 ops/s, p50 0.80 ms, p99 4.20 ms, errors 0"),
            "{svg}"
        );
        assert!(svg.contains("<rect"), "bars are drawn");
    }

    #[test]
    fn an_html_report_wraps_the_picture_and_lists_the_figures() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("run.html");
        write(&path, &result()).unwrap();
        let html = std::fs::read_to_string(path).unwrap();
        assert!(
            html.contains("<svg") && html.contains("<th>per_second</th><td>1234.6</td>"),
            "{html}"
        );
    }
}
