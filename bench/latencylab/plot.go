//go:build linux

package latencylab

import (
	"fmt"
	"image/color"
	"math"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// plotCDF draws the round-trip distribution of every path: x is the round
// trip in ms (log scale), y the share of frames at or under it.
func (r *Report) plotCDF(path string) error {
	p := plot.New()
	p.Title.Text = "Round trip per 640-byte frame"
	p.X.Label.Text = "round trip (ms, log scale)"
	p.Y.Label.Text = "share of frames"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Legend.Top = false
	p.Legend.Left = false
	i := 0
	for _, path := range r.Paths {
		if !path.Available || len(path.samples) == 0 {
			continue
		}
		s := slices.Clone(path.samples)
		slices.Sort(s)
		const maxPoints = 400
		step := max(1, len(s)/maxPoints)
		var pts plotter.XYs
		for k := 0; k < len(s); k += step {
			pts = append(pts, plotter.XY{X: math.Max(float64(s[k].Microseconds())/1000, 0.001), Y: float64(k+1) / float64(len(s))})
		}
		pts = append(pts, plotter.XY{X: math.Max(float64(s[len(s)-1].Microseconds())/1000, 0.001), Y: 1})
		line, err := plotter.NewLine(pts)
		if err != nil {
			return err
		}
		line.Color = plotutil.Color(i)
		line.Width = vg.Points(1.5)
		p.Add(line)
		p.Legend.Add(path.Name, line)
		i++
	}
	p.Add(plotter.NewGrid())
	return p.Save(8*vg.Inch, 5*vg.Inch, path)
}

// plotHandshakes draws p50 and p99 handshake time per auth mode.
func (r *Report) plotHandshakes(path string) error {
	p := plot.New()
	p.Title.Text = "Handshake time per auth mode"
	p.Y.Label.Text = "ms"
	var names []string
	var p50, p99 plotter.Values
	for _, h := range r.Handshakes {
		if !h.Available {
			continue
		}
		names = append(names, h.Mode)
		p50 = append(p50, float64(h.Latency.P50.Microseconds())/1000)
		p99 = append(p99, float64(h.Latency.P99.Microseconds())/1000)
	}
	if len(names) == 0 {
		return fmt.Errorf("no handshake results to plot")
	}
	w := vg.Points(18)
	b50, err := plotter.NewBarChart(p50, w)
	if err != nil {
		return err
	}
	b50.Color = color.RGBA{R: 66, G: 133, B: 244, A: 255}
	b50.Offset = -w / 2
	b99, err := plotter.NewBarChart(p99, w)
	if err != nil {
		return err
	}
	b99.Color = color.RGBA{R: 219, G: 68, B: 55, A: 255}
	b99.Offset = w / 2
	p.Add(b50, b99)
	p.Legend.Add("p50", b50)
	p.Legend.Add("p99", b99)
	p.Legend.Top = true
	p.NominalX(names...)
	return p.Save(10*vg.Inch, 5*vg.Inch, path)
}
