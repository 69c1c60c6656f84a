/** Live line chart of the cluster's message rate (uPlot: created once, data pushed on every overview). */
import { useEffect, useRef } from 'react';
import uPlot from 'uplot';

export interface RatePoint {
  /** seconds since the epoch */
  t: number;
  sent: number;
  received: number;
}

export function RateChart({ points }: { points: RatePoint[] }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);

  useEffect(() => {
    if (!box.current) return;
    const u = new uPlot(
      {
        width: Math.max(300, box.current.clientWidth - 12),
        height: 220,
        scales: { x: { time: true } },
        axes: [{}, { label: 'msgs/s', size: 60 }],
        series: [
          {},
          { label: 'sent/s', stroke: '#2f6fdf', width: 2 },
          { label: 'received/s', stroke: '#2a9d5b', width: 2 },
        ],
      },
      [[], [], []],
      box.current,
    );
    plot.current = u;
    const onResize = () => {
      if (box.current) u.setSize({ width: Math.max(300, box.current.clientWidth - 12), height: 220 });
    };
    window.addEventListener('resize', onResize);
    return () => {
      window.removeEventListener('resize', onResize);
      u.destroy();
      plot.current = null;
    };
  }, []);

  useEffect(() => {
    plot.current?.setData([points.map((p) => p.t), points.map((p) => p.sent), points.map((p) => p.received)]);
  }, [points]);

  return <div className="chart" ref={box} data-testid="rate-chart" />;
}
