//! `--watch-file`: samples a file's size (the server's database) and the server's RssFile and
//! RssAnon (with `--pid`) every second while a scenario runs, and with `--size-report` draws them
//! over time: the soak that shows a database with retention on stops growing once freed pages are
//! reused.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use plotters::prelude::*;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::procfs;

const EVERY: Duration = Duration::from_secs(1);
const MIB: f64 = 1024.0 * 1024.0;

/// One sample: seconds since the start, the file's bytes, RssFile and RssAnon in KiB.
type Sample = (f64, u64, Option<u64>, Option<u64>);

pub struct Sampler {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Vec<Sample>>,
}

impl Sampler {
    pub fn start(file: PathBuf, pid: Option<u32>) -> Self {
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn({
            async move {
                let started = Instant::now();
                let mut samples = Vec::new();
                loop {
                    let bytes = std::fs::metadata(&file).map_or(0, |m| m.len());
                    let memory = pid.and_then(procfs::memory);
                    let secs = started.elapsed().as_secs_f64();
                    samples.push((
                        secs,
                        bytes,
                        memory.as_ref().map(|m| m.file_kib),
                        memory.map(|m| m.anon_kib),
                    ));
                    tokio::select! {
                        _ = &mut stopped => return samples,
                        () = tokio::time::sleep(EVERY) => {}
                    }
                }
            }
        });
        Self { stop, task }
    }

    /// The samples as JSON rows `[seconds, file bytes, RssFile KiB, RssAnon KiB]`.
    pub async fn finish(self) -> Value {
        let _ = self.stop.send(());
        let samples = self.task.await.unwrap_or_default();
        json!(samples)
    }
}

/// Draws the file's size and the server's RssFile over time to `path` (SVG).
pub fn draw(path: &Path, result: &Value) -> anyhow::Result<()> {
    let rows = result["size_samples"].as_array().cloned().unwrap_or_default();
    let series = |column: usize, scale: f64| -> Vec<(f64, f64)> {
        rows.iter()
            .filter_map(|row| Some((row[0].as_f64()?, row[column].as_f64()? / scale)))
            .collect()
    };
    let file = series(1, MIB);
    let rss_file = series(2, 1024.0);
    let seconds = file.last().map_or(1.0, |(t, _)| t.max(1.0));
    let top = file
        .iter()
        .chain(&rss_file)
        .map(|(_, mib)| *mib)
        .fold(1.0, f64::max)
        * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let caption = format!(
            "{}: database file and RssFile over {seconds:.0} s",
            result["scenario"].as_str().unwrap_or("run")
        );
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..seconds, 0.0..top)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("MiB")
            .max_light_lines(4)
            .draw()?;
        chart
            .draw_series(LineSeries::new(file, BLUE.stroke_width(2)))?
            .label("database file (data.mdb)")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 12, y)], BLUE.stroke_width(2)));
        chart
            .draw_series(LineSeries::new(rss_file, RED.stroke_width(2)))?
            .label("server RssFile")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 12, y)], RED.stroke_width(2)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))
}
