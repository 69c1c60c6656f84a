/**
 * A live uPlot line chart whose series can come and go (link RTT per node pair): the plot is built again
 * when the series' labels change, and only fed new data otherwise.
 */
import { useEffect, useRef } from 'react';
import uPlot from 'uplot';

const COLORS = ['#2f6fdf', '#2a9d5b', '#d23c3c', '#c98a12', '#7a4fd0', '#1a9fb0', '#b04f8e', '#5d6b82'];

export interface LineSeries {
  label: string;
}

export function LineChart({
  series,
  data,
  unit,
  testId,
  height = 200,
}: {
  series: LineSeries[];
  /** x (seconds since the epoch) first, then one array per series (null: no value at that time). */
  data: (number | null)[][];
  unit: string;
  testId: string;
  height?: number;
}) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const labels = series.map((s) => s.label).join('\u0000');

  // biome-ignore lint/correctness/useExhaustiveDependencies: rebuilt only when the series labels change
  useEffect(() => {
    if (!box.current) return;
    const width = () => Math.max(300, (box.current?.clientWidth ?? 600) - 12);
    const u = new uPlot(
      {
        width: width(),
        height,
        scales: { x: { time: true } },
        axes: [{}, { label: unit, size: 60 }],
        series: [
          {},
          ...series.map((s, i) => ({
            label: s.label,
            stroke: COLORS[i % COLORS.length] ?? '#2f6fdf',
            width: 2,
            spanGaps: true,
          })),
        ],
      },
      data as uPlot.AlignedData,
      box.current,
    );
    plot.current = u;
    const onResize = () => u.setSize({ width: width(), height });
    window.addEventListener('resize', onResize);
    return () => {
      window.removeEventListener('resize', onResize);
      u.destroy();
      plot.current = null;
    };
  }, [labels, unit, height]);

  useEffect(() => {
    plot.current?.setData(data as uPlot.AlignedData);
  }, [data]);

  return <div className="chart" ref={box} data-testid={testId} />;
}
