import { createRoot } from 'react-dom/client';
import 'uplot/dist/uPlot.min.css';
import './styles.css';
import { App } from './App';
import { takeToken } from './api';

const root = document.getElementById('root');
if (root) createRoot(root).render(<App initialToken={takeToken()} />);
