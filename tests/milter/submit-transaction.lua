-- submit-transaction.lua: one SMTP transaction through tn-submit-milter.
-- miltertest -D socket=inet:PORT@127.0.0.1 -D from=ADDRESS -D rcpts=a@x,b@y
--            [-D login=SASL-LOGIN] [-D size=N] [-D body=N] [-D qid=ID]
--            [-D finish=eom|abort|quit|none] [-D count=N] [-D pause=S]
--            -s submit-transaction.lua
-- Without login, no {auth_authen} macro is sent (an unauthenticated
-- session). from="" sends the null sender <>. count=N repeats the
-- transaction N times in one session (a client sending N messages).
-- Prints "mail continue|replycode|...", then per recipient
-- "rcpt ADDRESS continue|replycode|...", then "eom ..." (finish=eom),
-- "aborted" (finish=abort: RSET), nothing for finish=quit (the session
-- ends mid-transaction) and none. pause=S sleeps S seconds after the
-- recipients (a transaction held open). An SMFIR_ACCEPT anywhere is an
-- error.
local names = {}
names[SMFIR_CONTINUE] = "continue"
names[SMFIR_REPLYCODE] = "replycode"
names[SMFIR_TEMPFAIL] = "tempfail"
names[SMFIR_REJECT] = "reject"
names[SMFIR_ACCEPT] = "accept"
names[SMFIR_DISCARD] = "discard"
local function name(r) return names[r] or ("other:" .. tostring(r)) end

mt.set_timeout(30)
conn = mt.connect(socket, 20, 0.1)
if conn == nil then error("cannot connect to " .. socket) end
finish = finish or "eom"
qid = qid or "4QSUB0001"
from = from or ""

local function one(n)
  if login ~= nil then
    mt.macro(conn, SMFIC_MAIL, "i", qid .. n, "{auth_authen}", login)
  else
    mt.macro(conn, SMFIC_MAIL, "i", qid .. n)
  end
  local err
  if size ~= nil then
    err = mt.mailfrom(conn, "<" .. from .. ">", "SIZE=" .. size)
  else
    err = mt.mailfrom(conn, "<" .. from .. ">")
  end
  if err ~= nil then error("mailfrom: " .. err) end
  local reply = mt.getreply(conn)
  mt.echo("mail " .. name(reply))
  if reply == SMFIR_ACCEPT then error("SMFIR_ACCEPT at MAIL") end
  if reply ~= SMFIR_CONTINUE then return end

  local accepted = 0
  for r in string.gmatch(rcpts, "[^,]+") do
    mt.macro(conn, SMFIC_RCPT, "i", qid .. n)
    err = mt.rcptto(conn, "<" .. r .. ">")
    if err ~= nil then error("rcptto " .. r .. ": " .. err) end
    reply = mt.getreply(conn)
    mt.echo("rcpt " .. r .. " " .. name(reply))
    if reply == SMFIR_ACCEPT then error("SMFIR_ACCEPT at RCPT for " .. r) end
    if reply == SMFIR_CONTINUE then accepted = accepted + 1 end
  end

  if pause ~= nil then mt.sleep(tonumber(pause)) end
  if finish == "abort" then
    err = mt.abort(conn)
    if err ~= nil then error("abort: " .. err) end
    mt.echo("aborted")
  elseif finish == "eom" and accepted > 0 then
    err = mt.header(conn, "Subject", "tn-submit-milter test")
    if err ~= nil then error("header: " .. err) end
    local left = tonumber(body or "100")
    local line = string.rep("x", 78) .. "\r\n"
    local chunk = string.rep(line, 800)
    while left > 0 do
      local piece = chunk
      if left < #chunk then piece = string.sub(chunk, 1, left) end
      err = mt.bodystring(conn, piece)
      if err ~= nil then error("body: " .. err) end
      left = left - #piece
    end
    err = mt.eom(conn)
    if err ~= nil then error("eom: " .. err) end
    mt.echo("eom " .. name(mt.getreply(conn)))
  end
end

for n = 1, tonumber(count or "1") do
  one(n)
  if finish == "quit" or finish == "none" then break end
end
mt.disconnect(conn)
mt.echo("done")
