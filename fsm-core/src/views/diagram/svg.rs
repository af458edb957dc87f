//! The diagram as SVG, laid out here (no renderer to install, nothing run in a browser): states
//! in columns by their distance from the initial state, transitions as curves, an execution's
//! path marked with classes a page can style and a test can find.

use core::fmt::Write as _;

use super::{Diagram, Edge};
use crate::StateKind;

/// Pixels per character of the state names' font, roughly (a sans-serif at 13 px).
const CHAR: f64 = 7.4;
const NOTE_CHAR: f64 = 6.0;
const NODE_HEIGHT: f64 = 34.0;
const NOTE_HEIGHT: f64 = 14.0;
const ROW_GAP: f64 = 34.0;
const COLUMN_GAP: f64 = 110.0;
const MARGIN: f64 = 24.0;
const START: f64 = 40.0;

/// Text as SVG holds it.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Where a state is drawn.
#[derive(Debug, Clone, Copy, Default)]
struct Place {
    x: f64,
    y: f64,
    width: f64,
    height: f64,
}

impl Place {
    fn middle_y(&self) -> f64 {
        self.y + self.height / 2.0
    }
}

impl Diagram<'_> {
    /// Each state's column: its distance from the initial state (over every transition).
    fn columns(&self) -> Vec<usize> {
        let def = self.def;
        let mut column = vec![usize::MAX; def.states.len()];
        column[def.initial] = 0;
        let mut queue = std::collections::VecDeque::from([def.initial]);
        while let Some(s) = queue.pop_front() {
            for t in def.transitions_from(s) {
                if column[t.to] == usize::MAX {
                    column[t.to] = column[s] + 1;
                    queue.push_back(t.to);
                }
            }
        }
        // (The derive refuses unreachable states; a hand-built definition's go last.)
        let last = column
            .iter()
            .filter(|&&c| c != usize::MAX)
            .max()
            .map_or(0, |c| c + 1);
        column
            .iter()
            .map(|&c| if c == usize::MAX { last } else { c })
            .collect()
    }

    /// Where each state is drawn, and the drawing's size.
    fn layout(&self) -> (Vec<Place>, f64, f64) {
        let def = self.def;
        let column = self.columns();
        let columns = column.iter().max().map_or(1, |c| c + 1);
        // Each column's states, in declaration order, then by where their predecessors are.
        let mut order: Vec<Vec<usize>> = vec![Vec::new(); columns];
        for (i, &c) in column.iter().enumerate() {
            order[c].push(i);
        }
        let mut rank = vec![0.0f64; def.states.len()];
        for (c, states) in order.iter_mut().enumerate() {
            if c > 0 {
                let mut keyed: Vec<(f64, usize)> = states
                    .iter()
                    .map(|&s| {
                        let from: Vec<f64> = def
                            .transitions
                            .iter()
                            .filter(|t| t.to == s && column[t.from] < c)
                            .map(|t| rank[t.from])
                            .collect();
                        let key = if from.is_empty() {
                            f64::MAX
                        } else {
                            from.iter().sum::<f64>() / from.len() as f64
                        };
                        (key, s)
                    })
                    .collect();
                keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
                *states = keyed.into_iter().map(|(_, s)| s).collect();
            }
            for (r, &s) in states.iter().enumerate() {
                rank[s] = r as f64;
            }
        }
        let mut places = vec![Place::default(); def.states.len()];
        for (i, place) in places.iter_mut().enumerate() {
            let notes = self.notes(i);
            let name = def.states[i].name.chars().count() as f64 * CHAR;
            let note = notes
                .iter()
                .map(|n| n.chars().count() as f64 * NOTE_CHAR)
                .fold(0.0, f64::max);
            place.width = name.max(note) + 28.0;
            place.height = NODE_HEIGHT + NOTE_HEIGHT * notes.len() as f64;
        }
        let heights: Vec<f64> = order
            .iter()
            .map(|states| {
                states.iter().map(|&s| places[s].height).sum::<f64>()
                    + ROW_GAP * states.len().saturating_sub(1) as f64
            })
            .collect();
        let tallest = heights.iter().copied().fold(0.0, f64::max);
        let mut x = MARGIN + START;
        for (c, states) in order.iter().enumerate() {
            let width = states.iter().map(|&s| places[s].width).fold(0.0, f64::max);
            let mut y = MARGIN + (tallest - heights[c]) / 2.0;
            for &s in states {
                places[s].x = x + (width - places[s].width) / 2.0;
                places[s].y = y;
                y += places[s].height + ROW_GAP;
            }
            x += width + COLUMN_GAP;
        }
        // Room below for the curves of transitions that go back.
        let height = MARGIN * 2.0 + tallest + 60.0;
        (places, x - COLUMN_GAP + MARGIN, height)
    }

    /// The diagram as SVG, laid out here: no renderer to install. Each state is a `<g>` with
    /// `class="state"` and `data-state="<name>"`, plus `success` or `failure` for terminal
    /// states; each edge a `<g class="edge">` (`catch` for a catch route) with
    /// `data-from`/`data-to`. With a path: `visited` on states entered, `current` on the state
    /// the execution is in, `failed` where it failed, `taken` (and `data-taken="<n>"`) on
    /// transitions taken. Names are escaped.
    pub fn svg(&self) -> String {
        let def = self.def;
        let (places, width, height) = self.layout();
        let mut out = String::new();
        let _ = write!(
            out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"fsm-diagram\" \
             viewBox=\"0 0 {width:.0} {height:.0}\" width=\"{width:.0}\" height=\"{height:.0}\" \
             role=\"img\" aria-label=\"{}\">",
            escape(def.name)
        );
        out.push_str(STYLE);
        out.push_str("<defs>");
        for (id, color) in [
            ("arrow", "#7f8c8d"),
            ("arrow-start", "#333"),
            ("arrow-taken", "#1e8449"),
            ("arrow-catch", "#c0392b"),
        ] {
            let _ = write!(
                out,
                "<marker id=\"{id}\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" \
                 markerUnits=\"userSpaceOnUse\" markerWidth=\"10\" markerHeight=\"10\" orient=\"auto\">\
                 <path d=\"M0,0 L10,5 L0,10 z\" fill=\"{color}\"/></marker>"
            );
        }
        out.push_str("</defs>");
        // The start: a dot with an arrow into the initial state.
        let initial = places[def.initial];
        let _ = write!(
            out,
            "<g class=\"start\"><circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"6\"/>\
             <path class=\"line\" d=\"M{:.1},{:.1} L{:.1},{:.1}\" \
             marker-end=\"url(#arrow-start)\"/></g>",
            initial.x - START + 6.0,
            initial.middle_y(),
            initial.x - START + 12.0,
            initial.middle_y(),
            initial.x - 2.0,
            initial.middle_y()
        );
        let edges = self.edges();
        // Labels over everything: drawn after the states.
        let mut labels = String::new();
        for (n, e) in edges.iter().enumerate() {
            self.svg_edge(&mut out, &mut labels, e, n, &places, height);
        }
        for (i, s) in def.states.iter().enumerate() {
            let p = places[i];
            let mut class = vec!["state"];
            match s.kind {
                StateKind::Step => {}
                StateKind::Success => class.push("success"),
                StateKind::Failure => class.push("failure"),
            }
            if let Some(path) = &self.path {
                if path.visited[i] {
                    class.push("visited");
                }
                if path.at == Some(i) {
                    class.push("current");
                }
                if path.failed == Some(i) {
                    class.push("failed");
                }
            }
            let radius = if s.kind.is_terminal() {
                p.height / 2.0
            } else {
                8.0
            };
            let _ = write!(
                out,
                "<g class=\"{}\" data-state=\"{}\"><rect x=\"{:.1}\" y=\"{:.1}\" \
                 width=\"{:.1}\" height=\"{:.1}\" rx=\"{radius:.1}\"/>\
                 <text class=\"name\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                class.join(" "),
                escape(s.name),
                p.x,
                p.y,
                p.width,
                p.height,
                p.x + p.width / 2.0,
                p.y + 21.0,
                escape(s.name)
            );
            for (k, note) in self.notes(i).iter().enumerate() {
                let _ = write!(
                    out,
                    "<text class=\"note\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                    p.x + p.width / 2.0,
                    p.y + 21.0 + NOTE_HEIGHT * (k + 1) as f64,
                    escape(note)
                );
            }
            out.push_str("</g>");
        }
        out.push_str(&labels);
        out.push_str("</svg>");
        out
    }

    /// One edge: a curve from its source to its target (below the states when it goes back
    /// or stays in its column), its label, its classes.
    fn svg_edge(
        &self,
        out: &mut String,
        labels: &mut String,
        e: &Edge,
        n: usize,
        places: &[Place],
        height: f64,
    ) {
        let def = self.def;
        let (a, b) = (places[e.from], places[e.to]);
        let taken = self.times_taken(e);
        let mut class = vec!["edge"];
        if e.catch {
            class.push("catch");
        }
        if taken > 0 {
            class.push("taken");
        }
        // Spread the edges that leave one state a little, so that they do not overlap.
        let spread = ((n % 5) as f64 - 2.0) * 3.0;
        let (d, label_x, label_y) = if e.from == e.to {
            let (x, y) = (a.x + a.width / 2.0, a.y);
            (
                format!(
                    "M{:.1},{y:.1} C{:.1},{:.1} {:.1},{:.1} {:.1},{y:.1}",
                    x - 14.0,
                    x - 30.0,
                    y - 36.0,
                    x + 30.0,
                    y - 36.0,
                    x + 14.0
                ),
                x,
                y - 34.0,
            )
        } else if b.x > a.x + a.width {
            let (x1, y1) = (a.x + a.width, a.middle_y() + spread);
            let (x2, y2) = (b.x - 2.0, b.middle_y() + spread);
            let bend = (x2 - x1) / 2.0;
            (
                format!(
                    "M{x1:.1},{y1:.1} C{:.1},{y1:.1} {:.1},{y2:.1} {x2:.1},{y2:.1}",
                    x1 + bend,
                    x2 - bend
                ),
                (x1 + x2) / 2.0,
                (y1 + y2) / 2.0 - 5.0,
            )
        } else if (b.x - a.x).abs() < 1.0 {
            // Within a column: out of the right side of one, into the right side of the other.
            let right = a.x.max(b.x) + a.width.max(b.width);
            let (x1, y1) = (a.x + a.width, a.middle_y());
            let (x2, y2) = (b.x + b.width + 2.0, b.middle_y());
            let out = right + 36.0;
            (
                format!("M{x1:.1},{y1:.1} C{out:.1},{y1:.1} {out:.1},{y2:.1} {x2:.1},{y2:.1}"),
                right + 30.0,
                (y1 + y2) / 2.0 + 4.0,
            )
        } else {
            // Back: under both states.
            let (x1, y1) = (a.x + a.width / 2.0 + spread, a.y + a.height);
            let (x2, y2) = (b.x + b.width / 2.0 + spread, b.y + b.height + 2.0);
            let low = (y1.max(y2) + 40.0 + (n % 3) as f64 * 8.0).min(height - 6.0);
            (
                format!("M{x1:.1},{y1:.1} C{x1:.1},{low:.1} {x2:.1},{low:.1} {x2:.1},{y2:.1}"),
                (x1 + x2) / 2.0,
                low - 4.0,
            )
        };
        let mut label = self.label(e);
        if taken > 1 {
            let _ = write!(label, " ({taken} times)");
        }
        let indices: Vec<String> = e.indices.iter().map(ToString::to_string).collect();
        let arrow = match (e.catch, taken > 0) {
            (true, _) => "arrow-catch",
            (false, true) => "arrow-taken",
            (false, false) => "arrow",
        };
        let (from, to) = (
            escape(def.states[e.from].name),
            escape(def.states[e.to].name),
        );
        let _ = write!(
            out,
            "<g class=\"{}\" data-from=\"{from}\" data-to=\"{to}\" data-transitions=\"{}\" \
             data-taken=\"{taken}\"><path class=\"line\" d=\"{d}\" \
             marker-end=\"url(#{arrow})\"/></g>",
            class.join(" "),
            indices.join(","),
        );
        class[0] = "label";
        let _ = write!(
            labels,
            "<text class=\"{}\" data-from=\"{from}\" data-to=\"{to}\" x=\"{label_x:.1}\" \
             y=\"{label_y:.1}\">{}</text>",
            class.join(" "),
            escape(&label)
        );
    }
}

/// How the drawing looks, inside the SVG so that it stands alone.
const STYLE: &str = "<style>\
.fsm-diagram{font-family:system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif}\
.fsm-diagram .state rect{fill:#fff;stroke:#5d6d7e;stroke-width:1.5}\
.fsm-diagram .state .name{font-size:13px;text-anchor:middle;fill:#1c2833}\
.fsm-diagram .state .note{font-size:10px;text-anchor:middle;fill:#566573}\
.fsm-diagram .state.success rect{stroke:#1e8449;stroke-width:3}\
.fsm-diagram .state.failure rect{fill:#fdedec;stroke:#c0392b;stroke-width:3}\
.fsm-diagram .state.visited rect{fill:#d5f5e3}\
.fsm-diagram .state.failure.visited rect{fill:#f5b7b1}\
.fsm-diagram .state.current rect{stroke:#1a5276;stroke-width:4}\
.fsm-diagram .state.failed rect{fill:#f5b7b1;stroke:#922b21;stroke-width:4}\
.fsm-diagram .start circle{fill:#333}\
.fsm-diagram .line{fill:none;stroke:#7f8c8d;stroke-width:1.5}\
.fsm-diagram .start .line{stroke:#333}\
.fsm-diagram .label{font-size:11px;text-anchor:middle;fill:#34495e;\
paint-order:stroke;stroke:#fff;stroke-width:4px;stroke-linejoin:round}\
.fsm-diagram .edge.catch .line{stroke:#c0392b;stroke-dasharray:5 4}\
.fsm-diagram .label.catch{fill:#c0392b}\
.fsm-diagram .edge.taken .line{stroke:#1e8449;stroke-width:3.5}\
.fsm-diagram .edge.catch.taken .line{stroke:#c0392b}\
</style>";
