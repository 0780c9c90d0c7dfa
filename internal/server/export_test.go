package server

// FlushRouteDenials ends the window of route-auth refusals now, as its
// ticker would, and writes their summaries to the audit log.
func (s *Server) FlushRouteDenials() { s.routeDenied.flush() }

// FlushDenials ends the window of the functions' denials now: the queued
// ones are recorded, then the summaries of repeats are written.
func (s *Server) FlushDenials() { s.denials.flushNow() }
