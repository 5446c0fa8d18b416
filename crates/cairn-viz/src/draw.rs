//! Drawing a [`Layout`] as SVG: time runs left to right, one line per
//! process, an arrow per message (markers dashed), a dot where each process
//! recorded, the cut through those dots, and the messages recorded as
//! channel state drawn thick.

use cairn_core::Topology;
use svg::Document;
use svg::node::element::{
    Circle, Definitions, Group, Line, Marker, Path, Polyline, Style, Text, Title,
};

use crate::layout::{Carries, Layout};

const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 64.0;
const BOTTOM: f64 = 16.0;
const MIN_WIDTH: f64 = 1100.0;

const STYLE: &str = "
text { font: 12px sans-serif; fill: #222; }
text.title { font-size: 14px; font-weight: bold; }
line.process { stroke: #999; stroke-width: 1; }
line.message { stroke: #555; stroke-width: 1; }
line.marker { stroke: #c0392b; stroke-width: 1; stroke-dasharray: 4 3; }
line.marker.other { stroke: #bbb; }
line.recorded { stroke: #e67e22; stroke-width: 3; }
line.clipped { stroke-opacity: 0.5; }
circle.record { fill: #2980b9; stroke: #fff; stroke-width: 1.5; }
polyline.cut { fill: none; stroke: #2980b9; stroke-width: 2; stroke-dasharray: 8 4; }
";

/// Geometry: where a row and a column are.
struct Grid {
    dx: f64,
    dy: f64,
    width: f64,
    height: f64,
}

impl Grid {
    fn new(processes: usize, columns: u32) -> Self {
        let dy = (900.0 / processes.max(1) as f64).clamp(18.0, 48.0);
        let dx = (2400.0 / f64::from(columns.max(1))).clamp(4.0, 18.0);
        Grid {
            dx,
            dy,
            // Wide enough for the title and the legend however short the run.
            width: (LEFT + RIGHT + 20.0 + dx * f64::from(columns.max(1))).max(MIN_WIDTH),
            height: TOP + BOTTOM + dy * processes as f64,
        }
    }
    fn x(&self, column: u32) -> f64 {
        LEFT + 10.0 + self.dx * f64::from(column)
    }
    fn y(&self, row: usize) -> f64 {
        TOP + self.dy * (row as f64 + 0.5)
    }
    fn left_edge(&self) -> f64 {
        LEFT
    }
    fn right_edge(&self) -> f64 {
        self.width - RIGHT
    }
}

fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// The SVG text of `layout`.
pub(crate) fn draw(topology: &Topology, layout: &Layout) -> String {
    let n = topology.process_count();
    let g = Grid::new(n, layout.columns);
    let mut doc = Document::new()
        .set("viewBox", (0, 0, round(g.width), round(g.height)))
        .set("width", round(g.width))
        .set("height", round(g.height))
        .set(
            "data-events",
            format!("{}..{}", layout.window.start, layout.window.end),
        )
        .set("data-total", layout.total)
        .add(Style::new(STYLE))
        .add(
            Definitions::new().add(
                Marker::new()
                    .set("id", "head")
                    .set("viewBox", "0 0 10 10")
                    .set("refX", 10)
                    .set("refY", 5)
                    .set("markerUnits", "userSpaceOnUse")
                    .set("markerWidth", 8)
                    .set("markerHeight", 8)
                    .set("orient", "auto-start-reverse")
                    .add(
                        Path::new()
                            .set("d", "M 0 0 L 10 5 L 0 10 z")
                            .set("fill", "context-stroke"),
                    ),
            ),
        );
    let mut title = format!(
        "events {}..{} of {}",
        layout.window.start, layout.window.end, layout.total
    );
    if let Some(s) = layout.snapshot {
        title = format!(
            "snapshot {s}: its cut (dashed blue), its markers (dashed red; other snapshots' grey), channel state (thick orange); {title}"
        );
    }
    if layout.recorded_outside > 0 {
        title = format!(
            "{title}; {} recorded messages lie outside this window",
            layout.recorded_outside
        );
    }
    doc = doc.add(
        Text::new(title)
            .set("class", "title")
            .set("x", 8)
            .set("y", 20),
    );
    doc = doc.add(legend());

    let mut rows = Group::new().set("class", "processes");
    for p in topology.processes() {
        let y = round(g.y(p.index()));
        rows = rows
            .add(
                Line::new()
                    .set("class", "process")
                    .set("data-process", topology.name(p))
                    .set("x1", g.left_edge())
                    .set("x2", round(g.right_edge()))
                    .set("y1", y)
                    .set("y2", y),
            )
            .add(
                Text::new(topology.name(p))
                    .set("x", 8)
                    .set("y", y + 4.0)
                    .set("class", "label"),
            );
    }
    doc = doc.add(rows);

    let trace_x = |i: Option<usize>, before: bool| match i.and_then(|i| layout.column_of(i)) {
        Some(c) => (round(g.x(c)), false),
        None if before => (g.left_edge(), true),
        None => (round(g.right_edge()), true),
    };
    let mut arrows = Group::new().set("class", "arrows");
    for a in &layout.arrows {
        let ch = topology.channel(a.channel);
        let (x1, clip1) = trace_x(a.send, true);
        let (x2, clip2) = trace_x(a.recv, false);
        let (kind, label) = match &a.carries {
            Carries::Message { seq, json } => (
                "message",
                format!("{} #{seq}: {json}", topology.channel_name(a.channel)),
            ),
            Carries::Marker(s) => (
                "marker",
                format!(
                    "{} marker of snapshot {s}",
                    topology.channel_name(a.channel)
                ),
            ),
        };
        let mut class = kind.to_string();
        if matches!(a.carries, Carries::Marker(s) if Some(s) != layout.snapshot) {
            class.push_str(" other");
        }
        if a.recorded {
            class.push_str(" recorded");
        }
        if clip1 || clip2 {
            class.push_str(" clipped");
        }
        let mut line = Line::new()
            .set("class", class)
            .set("data-channel", topology.channel_name(a.channel))
            .set("x1", x1)
            .set("y1", round(g.y(ch.from.index())))
            .set("x2", x2)
            .set("y2", round(g.y(ch.to.index())))
            .set("marker-end", "url(#head)")
            .add(Title::new(label));
        match &a.carries {
            Carries::Message { seq, json } => {
                line = line
                    .set("data-seq", *seq)
                    .set("data-message", json.as_str());
            }
            Carries::Marker(s) => line = line.set("data-snapshot", s.0),
        }
        if let Some(i) = a.send {
            line = line.set("data-send", i);
        }
        if let Some(i) = a.recv {
            line = line.set("data-recv", i);
        }
        arrows = arrows.add(line);
    }
    doc = doc.add(arrows);

    if let Some(s) = layout.snapshot {
        let mut cut = Vec::new();
        let mut dots = Group::new().set("class", "records");
        for p in topology.processes() {
            let Some(i) = layout.records[p.index()] else {
                continue;
            };
            let before = i < layout.window.start;
            let (x, _) = trace_x(Some(i), before);
            let y = round(g.y(p.index()));
            cut.push(format!("{x},{y}"));
            dots = dots.add(
                Circle::new()
                    .set("class", "record")
                    .set("data-process", topology.name(p))
                    .set("data-snapshot", s.0)
                    .set("data-event", i)
                    .set("cx", x)
                    .set("cy", y)
                    .set("r", 5)
                    .add(Title::new(format!(
                        "{} records its state for snapshot {s}",
                        topology.name(p)
                    ))),
            );
        }
        doc = doc
            .add(
                Polyline::new()
                    .set("class", "cut")
                    .set("data-snapshot", s.0)
                    .set("points", cut.join(" ")),
            )
            .add(dots);
    }
    doc.to_string()
}

fn legend() -> Group {
    let item = |x: f64, class: &str, text: &str| {
        Group::new()
            .add(
                Line::new()
                    .set("class", class)
                    .set("x1", x)
                    .set("x2", x + 28.0)
                    .set("y1", 40)
                    .set("y2", 40),
            )
            .add(Text::new(text).set("x", x + 34.0).set("y", 44))
    };
    Group::new()
        .set("class", "legend")
        .add(item(8.0, "message", "message"))
        .add(item(118.0, "marker", "marker"))
        .add(item(
            218.0,
            "message recorded",
            "recorded in a channel's state",
        ))
        .add(
            Circle::new()
                .set("class", "record")
                .set("cx", 440)
                .set("cy", 40)
                .set("r", 5),
        )
        .add(Text::new("state recorded").set("x", 450).set("y", 44))
        .add(
            Polyline::new()
                .set("class", "cut")
                .set("points", "560,40 588,40"),
        )
        .add(Text::new("the cut").set("x", 594).set("y", 44))
}
